//! The `xe` VM operation commands against the daemon (fake probe: no
//! domain runs, so the power operations are seen refusing halted VMs and
//! templates; they run on real Xen in the lab's `vm` test): selection by
//! uuid, `vm=`, fields and `--multiple`, install/clone/copy/destroy/
//! uninstall, help. Output compared byte for byte.

mod common;

use common::xe_cli::*;
use common::*;
use serde_json::json;

const TEMPLATE: &str = "Linux PV (direct kernel boot)";
const INTERNAL: &str = "The server failed to handle your request, due to an internal error. The given message may give details useful for debugging the problem.\n";
const BAD_POWER: &str = "You attempted an operation on a VM that was not in an appropriate power state at the time; for example, you attempted to start a VM that was already running. The parameters returned are the VM's handle, and the expected and actual VM state at the time of the call.\n";

fn start() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]);
    (dir, d)
}

/// `xe` failing: (stdout, stderr) after asserting exit status 1.
fn fails(d: &Daemon, args: &[&str]) -> (String, String) {
    let o = xe(d, args);
    assert_eq!(o.code, 1, "xe {args:?} should fail: {:?}", o.stdout);
    (o.stdout, o.stderr)
}

fn failure(m: &str) -> String {
    format!("{INTERNAL}message: Failure: {m}\n")
}

fn param(d: &Daemon, uuid: &str, name: &str) -> String {
    ok(
        d,
        &[
            "vm-param-get",
            &format!("uuid={uuid}"),
            &format!("param-name={name}"),
        ],
    )
    .trim_end()
    .to_string()
}

/// A uuid printed alone on a line.
fn one_uuid(out: &str) -> String {
    let u = out.strip_suffix('\n').unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(u.len(), 36, "{out:?}");
    assert!(!u.contains('\n'));
    u.to_string()
}

fn install(d: &Daemon, name: &str) -> String {
    one_uuid(&ok(
        d,
        &[
            "vm-install",
            &format!("template={TEMPLATE}"),
            &format!("new-name-label={name}"),
        ],
    ))
}

#[test]
fn vm_install_clone_copy_destroy_uninstall() {
    let (_dir, d) = start();
    let before = ok(&d, &["vm-list", "--minimal"]);

    // From the template by name: a VM, no longer a template, described as
    // the reference's xe describes it, without default_template.
    let a = install(&d, "a");
    assert_eq!(param(&d, &a, "is-a-template"), "false");
    assert_eq!(param(&d, &a, "name-label"), "a");
    assert_eq!(param(&d, &a, "name-description"), "Installed via xe CLI");
    assert_eq!(param(&d, &a, "power-state"), "halted");
    assert!(!param(&d, &a, "other-config").contains("default_template"));
    assert!(ok(&d, &["vm-list", "--minimal"]).contains(&a));

    // By template uuid, and template= given a uuid.
    let tpl = one_uuid(&ok(
        &d,
        &[
            "template-list",
            &format!("name-label={TEMPLATE}"),
            "--minimal",
        ],
    ));
    let b = one_uuid(&ok(
        &d,
        &[
            "vm-install",
            &format!("template-uuid={tpl}"),
            "new-name-label=b",
        ],
    ));
    let c = one_uuid(&ok(
        &d,
        &["vm-install", &format!("template={tpl}"), "new-name-label=c"],
    ));
    assert!(a != b && b != c);

    // Not a template, no such template, none named, a template with disks
    // and no SR to put them on: the reference's messages, nothing made.
    let vms = ok(&d, &["vm-list", "--minimal"]);
    assert_eq!(
        fails(
            &d,
            &["vm-install", &format!("template={a}"), "new-name-label=x"]
        ),
        (String::new(), failure("Can only install from templates"))
    );
    assert_eq!(
        fails(
            &d,
            &["vm-install", "template=nothing-like-it", "new-name-label=x"]
        ),
        (String::new(), failure("No templates matched"))
    );
    assert_eq!(
        fails(
            &d,
            &["vm-install", "template-uuid=nothing", "new-name-label=x"]
        ),
        (String::new(), failure("Cannot find template"))
    );
    assert_eq!(
        fails(&d, &["vm-install", "new-name-label=x"]).1,
        failure("Template must be specified by parameter 'template-uuid', 'template-name', 'template-name-label' or 'template'")
    );
    // A template with disks: they are made on the pool's default SR (the
    // local one), named after their slot; the new VM keeps no provision
    // record; uninstalling removes them.
    let deb = one_uuid(&ok(
        &d,
        &[
            "vm-install",
            "template=Debian Bookworm 12 (PV, pygrub)",
            "new-name-label=deb",
        ],
    ));
    let vbd = one_uuid(&ok(
        &d,
        &["vbd-list", &format!("vm-uuid={deb}"), "--minimal"],
    ));
    let vbd_param = |n: &str| {
        ok(
            &d,
            &[
                "vbd-param-get",
                &format!("uuid={vbd}"),
                &format!("param-name={n}"),
            ],
        )
        .trim_end()
        .to_string()
    };
    assert_eq!(
        (vbd_param("userdevice"), vbd_param("bootable")),
        ("0".into(), "true".into())
    );
    let vdi = vbd_param("vdi-uuid");
    let vdi_param = |n: &str| {
        ok(
            &d,
            &[
                "vdi-param-get",
                &format!("uuid={vdi}"),
                &format!("param-name={n}"),
            ],
        )
        .trim_end()
        .to_string()
    };
    assert_eq!(
        (
            vdi_param("name-label"),
            vdi_param("virtual-size"),
            vdi_param("sr-name-label")
        ),
        ("0".into(), "8589934592".into(), "Local storage".into())
    );
    assert!(!param(&d, &deb, "other-config").contains("disks"));
    ok(&d, &["vm-uninstall", &format!("uuid={deb}"), "--force"]);
    assert_eq!(
        ok(&d, &["vdi-list", &format!("uuid={vdi}"), "--minimal"]),
        "\n"
    );
    assert_eq!(
        fails(&d, &["vm-install", &format!("template={TEMPLATE}")]).1,
        "Required parameter not found: new-name-label\nFor usage run: 'xe help'\n"
    );
    assert_eq!(ok(&d, &["vm-list", "--minimal"]), vms);

    // Clone and copy print the new uuid; a description is set when given.
    let a2 = one_uuid(&ok(
        &d,
        &[
            "vm-clone",
            "vm=a",
            "new-name-label=a2",
            "new-name-description=second",
        ],
    ));
    assert_eq!(param(&d, &a2, "name-label"), "a2");
    assert_eq!(param(&d, &a2, "name-description"), "second");
    let a3 = one_uuid(&ok(
        &d,
        &["vm-copy", &format!("uuid={a}"), "new-name-label=a3"],
    ));
    assert_eq!(param(&d, &a3, "name-label"), "a3");
    // Templates can be cloned from xe too.
    let t2 = one_uuid(&ok(
        &d,
        &[
            "vm-clone",
            &format!("uuid={tpl}"),
            "new-name-label=my template",
        ],
    ));
    assert_eq!(param(&d, &t2, "is-a-template"), "true");

    // Destroy prints nothing; the control domain is refused.
    assert_eq!(ok(&d, &["vm-destroy", &format!("uuid={a3}")]), "");
    assert!(!ok(&d, &["vm-list", "--minimal"]).contains(&a3));
    let dom0 = one_uuid(&ok(&d, &["vm-list", "is-control-domain=true", "--minimal"]));
    assert_eq!(
        fails(&d, &["vm-destroy", &format!("uuid={dom0}")]).1,
        "You attempted an operation that was not allowed.\nreason: You cannot destroy a control domain via the CLI\n"
    );

    // Uninstall lists what goes and asks; anything but yes keeps it.
    let listed = format!("The following items are about to be destroyed\nVM : {a2} (a2)\n");
    let o = xe_input(&d, &["vm-uninstall", "vm=a2"], "no\n");
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (
            0,
            format!("{listed}Type 'yes' to continue\nAborted (you typed: 'no')\n").as_str(),
            ""
        )
    );
    assert!(ok(&d, &["vm-list", "--minimal"]).contains(&a2));
    let keep = one_uuid(&ok(&d, &["vm-clone", "vm=a2", "new-name-label=a4"]));
    let o = xe_input(&d, &["vm-uninstall", &format!("uuid={keep}")], " YES \n");
    assert_eq!(
        (o.code, o.stdout, o.stderr),
        (
            0,
            format!("The following items are about to be destroyed\nVM : {keep} (a4)\nType 'yes' to continue\nAll objects destroyed\n"),
            String::new()
        )
    );
    assert!(!ok(&d, &["vm-list", "--minimal"]).contains(&keep));
    // With --force it does not ask.
    assert_eq!(
        ok(&d, &["vm-uninstall", "vm=a2", "--force"]),
        format!("The following items are about to be destroyed\nVM : {a2} (a2)\nAll objects destroyed\n")
    );
    assert!(!ok(&d, &["vm-list", "--minimal"]).contains(&a2));
    for u in [&a, &b, &c] {
        ok(&d, &["vm-uninstall", &format!("uuid={u}"), "--force"]);
    }
    ok(&d, &["vm-destroy", &format!("uuid={t2}")]);
    assert_eq!(ok(&d, &["vm-list", "--minimal"]), before);
}

#[test]
fn vm_power_commands_select_and_refuse_as_the_reference() {
    let (_dir, d) = start();
    let a = install(&d, "a");
    let ref_a = {
        let s = d.login();
        d.ok("VM.get_by_uuid", json!([s, a]))
    };

    // A halted VM: the clean and hard operations name the state they need.
    let bad =
        |expected: &str| format!("{BAD_POWER}vm: {a} (a)\nexpected: {expected}\nactual: halted\n");
    for (args, expected) in [
        (vec!["vm-shutdown", "vm=a"], "running"),
        (vec!["vm-shutdown", "vm=a", "--force"], "running"),
        (vec!["vm-reboot", "vm=a"], "running"),
        (vec!["vm-reboot", "vm=a", "--force"], "running"),
        (vec!["vm-pause", "vm=a"], "running"),
        (vec!["vm-unpause", "vm=a"], "paused"),
        (vec!["vm-suspend", "vm=a"], "running"),
        (vec!["vm-resume", "vm=a"], "suspended"),
    ] {
        assert_eq!(fails(&d, &args), (String::new(), bad(expected)), "{args:?}");
    }
    // By uuid, by uuid through vm=, by a field: the same VM.
    assert_eq!(
        fails(&d, &["vm-reboot", &format!("uuid={a}")]).1,
        bad("running")
    );
    assert_eq!(
        fails(&d, &["vm-reboot", &format!("vm={a}")]).1,
        bad("running")
    );
    assert_eq!(
        fails(&d, &["vm-reboot", "name-label=a", "power-state=halted"]).1,
        bad("running")
    );
    // The API answers the same for the reboots.
    let s = d.login();
    for m in ["VM.clean_reboot", "VM.hard_reboot"] {
        assert_eq!(
            d.fail(m, json!([s, ref_a])),
            [
                "VM_BAD_POWER_STATE",
                ref_a.as_str().unwrap(),
                "running",
                "halted"
            ],
            "{m}"
        );
    }

    // No match: templates and the control domain are not selected by
    // default; unknown values or fields.
    let tpl = one_uuid(&ok(
        &d,
        &[
            "template-list",
            &format!("name-label={TEMPLATE}"),
            "--minimal",
        ],
    ));
    let none = (String::new(), failure("No matching VMs found"));
    assert_eq!(fails(&d, &["vm-start", &format!("uuid={tpl}")]), none);
    assert_eq!(fails(&d, &["vm-shutdown", "is-control-domain=true"]), none);
    assert_eq!(fails(&d, &["vm-shutdown", "vm=nothing"]), none);
    assert_eq!(fails(&d, &["vm-shutdown", "power-state=running"]), none);
    assert_eq!(
        fails(&d, &["vm-shutdown", "no-such-field=1"]).1,
        failure("Unknown field 'no-such-field'")
    );
    assert_eq!(
        fails(&d, &["vm-shutdown", "tags:x=1"]).1,
        failure("Invalid syntax for set filtering (should be set-param:contains=key)")
    );
    // The template itself through the API: the reference's template error.
    let tref = d.ok("VM.get_by_uuid", json!([s, tpl]));
    assert_eq!(
        d.fail("VM.start", json!([s, tref, false, false])),
        ["VM_IS_TEMPLATE", tref.as_str().unwrap(), "start"]
    );
    assert_eq!(
        d.fail("VM.provision", json!([s, ref_a])),
        ["ONLY_PROVISION_TEMPLATE"]
    );

    // Two VMs match: --multiple is needed; with it each is tried and the
    // failures are reported per VM (stdout, as the reference).
    let b = install(&d, "b");
    ok(
        &d,
        &["vm-param-set", &format!("uuid={a}"), "other-config:group=g"],
    );
    ok(
        &d,
        &["vm-param-set", &format!("uuid={b}"), "other-config:group=g"],
    );
    assert_eq!(
        fails(&d, &["vm-shutdown", "other-config:group=g"]),
        (
            String::new(),
            failure("Multiple matches VMs found. --multiple required to complete the operation")
        )
    );
    let (out, err) = fails(&d, &["vm-shutdown", "other-config:group=g", "--multiple"]);
    assert_eq!(err, "");
    let mut want: Vec<String> = [(&a, "a"), (&b, "b")]
        .iter()
        .map(|(u, n)| {
            format!(
                "operation failed on {u}: {}vm: {u} ({n})\nexpected: running\nactual: halted\n",
                BAD_POWER
            )
        })
        .collect();
    want.sort();
    let mut got: Vec<String> = out
        .split_inclusive("actual: halted\n")
        .map(str::to_string)
        .collect();
    got.sort();
    assert_eq!(got, want);
    // vm-copy does one VM at a time whatever --multiple says.
    assert_eq!(
        fails(
            &d,
            &[
                "vm-copy",
                "other-config:group=g",
                "new-name-label=x",
                "--multiple"
            ]
        )
        .1,
        failure("Multiple matches VMs found. Operation can only be performed on one VM at a time")
    );

    // vm-start passes the checks, then needs a hypervisor this daemon does
    // not have; the claim is released.
    let err = fails(&d, &["vm-start", "vm=a"]).1;
    assert!(err.starts_with(INTERNAL), "{err}");
    assert_eq!(param(&d, &a, "current-operations"), "");
    assert_eq!(param(&d, &a, "power-state"), "halted");
}

#[test]
fn vm_commands_have_help_and_completion() {
    let (_dir, d) = start();
    assert_eq!(
        ok(&d, &["help", "vm-shutdown"]),
        "command name            : vm-shutdown\n        reqd params     : \n        optional params : force, <vm-selectors>\n        description     : Shutdown the selected VM(s). The optional argument --force will forcibly shut down the VM. VMs can be specified by filtering the full list of VMs on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the VM with that uuid, and 'power-state=halted' will select only VMs whose 'power-state' field is equal to 'halted'. The special pseudo-field 'vm' matches either of name-label or uuid. Where multiple VMs are matching, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe vm-list params=all'. If no parameters to select VMs are given, the operation will be performed on all VMs.\n\n\n"
    );
    assert_eq!(
        ok(&d, &["help", "vm-install"]),
        "command name            : vm-install\n        reqd params     : new-name-label\n        optional params : sr-name-label, sr-uuid, template, copy-bios-strings-from\n        description     : Install a new VM from a template. The template parameter can match either the template name or the uuid.\n\n\n"
    );
    let all = ok(&d, &["help", "--all", "--minimal"]);
    let names: Vec<&str> = all.trim_end().split(',').collect();
    for c in [
        "vm-start",
        "vm-shutdown",
        "vm-reboot",
        "vm-pause",
        "vm-unpause",
        "vm-suspend",
        "vm-resume",
        "vm-destroy",
        "vm-clone",
        "vm-copy",
        "vm-install",
        "vm-uninstall",
    ] {
        assert!(names.contains(&c), "{c} not in {all}");
    }
    // The common list (`xe help`) has the standard ones, as the reference.
    let std = ok(&d, &["help", "--minimal"]);
    assert!(std.contains("vm-install") && std.contains("vm-start"));
    assert!(!std.contains("vm-destroy"));
}

/// records.ml's computed device fields: the free slots the API's
/// `get_allowed_*_devices` gives, a set in `param-list`, `<expensive
/// field>` in `vm-list` unless asked for.
#[test]
fn allowed_device_fields() {
    let (_dir, d) = start();
    let uuid = install(&d, "devices");
    assert_eq!(
        param(&d, &uuid, "allowed-VIF-devices"),
        "0; 1; 2; 3; 4; 5; 6"
    );
    let vbd = param(&d, &uuid, "allowed-VBD-devices");
    let slots: Vec<&str> = vbd.split("; ").collect();
    assert_eq!(slots.len(), 255, "{vbd}");
    assert_eq!((slots[0], slots[254]), ("0", "254"));
    let all = ok(&d, &["vm-param-list", &format!("uuid={uuid}")]);
    assert!(
        all.lines()
            .any(|l| l.trim_start() == "allowed-VIF-devices (SRO): 0; 1; 2; 3; 4; 5; 6"),
        "{all}"
    );
    // The API agrees.
    let s = d.login();
    let vm = d.ok("VM.get_by_uuid", json!([s, uuid]));
    let api = d.ok("VM.get_allowed_VIF_devices", json!([s, vm]));
    assert_eq!(api, json!(["0", "1", "2", "3", "4", "5", "6"]));
}

/// `vm-vcpu-hotplug` needs a running VM; `vm-memory-dynamic-range-set`
/// takes the reference's sizes (`128MiB`, `1 GiB`, bytes) and sets a
/// halted VM's range, refusing a range out of order.
#[test]
fn vcpu_hotplug_and_memory_range_commands() {
    let (_dir, d) = start();
    let a = install(&d, "a");
    assert_eq!(
        fails(&d, &["vm-vcpu-hotplug", "vm=a", "new-vcpus=2"]),
        (
            String::new(),
            format!("{BAD_POWER}vm: {a} (a)\nexpected: running\nactual: halted\n")
        )
    );
    assert_eq!(
        ok(
            &d,
            &[
                "vm-memory-dynamic-range-set",
                "vm=a",
                "min=128MiB",
                "max=134217728"
            ]
        ),
        ""
    );
    assert_eq!(param(&d, &a, "memory-dynamic-min"), "134217728");
    assert_eq!(param(&d, &a, "memory-dynamic-max"), "134217728");
    assert_eq!(
        fails(&d, &["vm-memory-dynamic-range-set", "vm=a", "min=1x", "max=1"]).1,
        failure("Failed to parse field 'min': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '1x'")
    );
    let (out, err) = fails(
        &d,
        &[
            "vm-memory-dynamic-range-set",
            "vm=a",
            "min=4GiB",
            "max=8GiB",
        ],
    );
    assert_eq!(out, "");
    assert_eq!(
        err,
        "The dynamic memory range violates constraint static_min <= dynamic_min <= dynamic_max <= static_max.\n"
    );
    assert_eq!(param(&d, &a, "memory-dynamic-max"), "134217728");
}

/// The memory fields take sizes with units in `vm-param-set`, as
/// records.ml's setters do.
#[test]
fn memory_params_take_units() {
    let (_dir, d) = start();
    let a = install(&d, "a");
    assert_eq!(
        ok(
            &d,
            &[
                "vm-param-set",
                &format!("uuid={a}"),
                "memory-static-max=1GiB"
            ]
        ),
        ""
    );
    assert_eq!(param(&d, &a, "memory-static-max"), "1073741824");
    assert_eq!(
        fails(
            &d,
            &["vm-param-set", &format!("uuid={a}"), "memory-static-max=lots"]
        )
        .1,
        failure("Failed to parse field 'memory-static-max': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got 'lots'")
    );
}

/// `vm-list` works out only what it shows: an expensive field is
/// `<expensive field>`, filters still see every field.
#[test]
fn vm_list_shows_expensive_fields_as_the_reference() {
    let (_dir, d) = start();
    let a = install(&d, "listed");
    let out = ok(
        &d,
        &[
            "vm-list",
            "name-label=listed",
            "params=uuid,allowed-VIF-devices",
        ],
    );
    assert_eq!(
        out,
        format!(
            "uuid ( RO)                   : {a}\n    allowed-VIF-devices (SRO): <expensive field>\n\n\n"
        )
    );
    // A filter on a field that is not shown.
    assert_eq!(
        ok(&d, &["vm-list", "PV-kernel=/no/such", "--minimal"]),
        "\n"
    );
    let all = ok(&d, &["vm-list", "name-label=listed", "params=all"]);
    assert!(
        all.contains("allowed-VBD-devices (SRO): <expensive field>"),
        "{all}"
    );
    assert!(all.contains("name-label ( RW): listed"), "{all}");
}

#[test]
fn device_commands_create_and_destroy_as_the_reference() {
    let (_dir, d) = start();
    let vm = install(&d, "devvm");
    let sr = one_uuid(&ok(
        &d,
        &["sr-list", "name-label=Local storage", "--minimal"],
    ));
    let net = one_uuid(&ok(
        &d,
        &[
            "network-create",
            "name-label=lab net",
            "bridge=xenbr9",
            "MTU=9000",
        ],
    ));
    assert_eq!(
        ok(
            &d,
            &[
                "network-param-get",
                &format!("uuid={net}"),
                "param-name=bridge"
            ]
        ),
        "xenbr9\n"
    );
    let vdi = one_uuid(&ok(
        &d,
        &[
            "vdi-create",
            &format!("sr-uuid={sr}"),
            "name-label=d0",
            "virtual-size=8MiB",
        ],
    ));
    assert_eq!(
        ok(
            &d,
            &[
                "vdi-param-get",
                &format!("uuid={vdi}"),
                "param-name=virtual-size"
            ]
        ),
        "8388608\n"
    );
    assert_eq!(
        fails(
            &d,
            &[
                "vdi-create",
                &format!("sr-uuid={sr}"),
                "name-label=x",
                "virtual-size=1",
                "type=bogus"
            ]
        )
        .1,
        "Error: Unknown vdi type: bogus\n"
    );
    let vbd = one_uuid(&ok(
        &d,
        &[
            "vbd-create",
            &format!("vm-uuid={vm}"),
            &format!("vdi-uuid={vdi}"),
            "device=0",
            "bootable=yes",
        ],
    ));
    assert_eq!(
        ok(
            &d,
            &[
                "vbd-param-get",
                &format!("uuid={vbd}"),
                "param-name=bootable"
            ]
        ),
        "true\n"
    );
    assert_eq!(
        fails(&d, &["vbd-create", &format!("vm-uuid={vm}"), "device=1"]).1,
        "Error: Empty VBDs can only be made for type=CD\n"
    );
    assert_eq!(
        fails(
            &d,
            &[
                "vbd-create",
                &format!("vm-uuid={vm}"),
                "device=1",
                "mode=rx"
            ]
        )
        .1,
        "Error: Unknown mode: rx (should be \"ro\" or \"rw\"\n"
    );
    assert_eq!(
        fails(&d, &["vbd-create", &format!("vm-uuid={vm}"), "device=1", "bootable=maybe"]).1,
        "Error: Failed to parse parameter 'bootable': Expected 'true','t','yes','y','1','false','f','no','n','0' got maybe\n"
    );
    let vif = one_uuid(&ok(
        &d,
        &[
            "vif-create",
            &format!("vm-uuid={vm}"),
            &format!("network-uuid={net}"),
            "device=0",
            "mac=random",
        ],
    ));
    assert_eq!(
        ok(
            &d,
            &["vif-param-get", &format!("uuid={vif}"), "param-name=MTU"]
        ),
        "9000\n",
        "the network's MTU"
    );
    let mac = ok(
        &d,
        &["vif-param-get", &format!("uuid={vif}"), "param-name=MAC"],
    );
    assert_eq!(mac.trim_end().len(), 17, "{mac:?}");
    // The halted VM cannot have its devices plugged.
    let (_, err) = fails(&d, &["vbd-plug", &format!("uuid={vbd}")]);
    assert!(
        err.contains("VM_BAD_POWER_STATE") || err.contains("appropriate power state"),
        "{err}"
    );
    for (cmd, uuid) in [
        ("vif-destroy", &vif),
        ("vbd-destroy", &vbd),
        ("vdi-destroy", &vdi),
        ("network-destroy", &net),
    ] {
        assert_eq!(ok(&d, &[cmd, &format!("uuid={uuid}")]), "", "{cmd}");
    }
    assert_eq!(
        ok(&d, &["vdi-list", &format!("uuid={vdi}"), "--minimal"]),
        "\n"
    );
}
