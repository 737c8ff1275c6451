//! The VM area's record-level messages, as a client sees them: creation
//! with the reference's checks, VBDs and VIFs joining their VM's sets,
//! clone (dropping `default_template`), destroy taking the VM's own objects
//! with it, and the errors bad input gets. No domain runs here (the fake
//! host probe); starting guests is proven in the lab.

mod common;

use common::*;
use serde_json::{json, Value};

fn vm_args(name: &str) -> Value {
    json!({
        "name_label": name,
        "memory_static_min": "134217728",
        "memory_dynamic_min": "268435456",
        "memory_dynamic_max": "268435456",
        "memory_static_max": "268435456",
        "VCPUs_max": "2",
        "VCPUs_at_startup": "1",
        "PV_kernel": "/boot/vmlinuz",
        "other_config": {"default_template": "true", "keep": "me"},
    })
}

#[test]
fn vm_lifecycle_records_follow_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]);
    let s = d.login();
    let vm = d.ok("VM.create", json!([s, vm_args("one")]));
    let rec = d.ok("VM.get_record", json!([s, vm]));
    assert_eq!(rec["power_state"], "Halted");
    assert_eq!(rec["domain_type"], "pv");
    assert_eq!(rec["resident_on"], "OpaqueRef:NULL");
    assert!(rec["allowed_operations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "start"));
    // A metrics object of its own.
    let m = rec["metrics"].as_str().unwrap().to_string();
    assert!(
        d.ok("VM_metrics.get_uuid", json!([s, m]))
            .as_str()
            .unwrap()
            .len()
            == 36
    );

    // Bad input: the reference's codes and parameters, nothing created.
    let before = d.ok("VM.get_all", json!([s])).as_array().unwrap().len();
    let mut bad = vm_args("bad");
    bad["memory_dynamic_min"] = json!("536870912");
    assert_eq!(
        d.fail("VM.create", json!([s, bad])),
        ["MEMORY_CONSTRAINT_VIOLATION_ORDER"]
    );
    let mut bad = vm_args("bad");
    bad["VCPUs_at_startup"] = json!("3");
    assert_eq!(
        d.fail("VM.create", json!([s, bad]))[..3],
        ["VALUE_NOT_SUPPORTED", "VCPUs_at_startup", "3"]
    );
    let mut bad = vm_args("bad");
    bad["VCPUs_max"] = json!("0");
    bad["VCPUs_at_startup"] = json!("0");
    assert_eq!(
        d.fail("VM.create", json!([s, bad])),
        ["INVALID_VALUE", "VCPUs_max", "0"]
    );
    assert_eq!(
        d.ok("VM.get_all", json!([s])).as_array().unwrap().len(),
        before
    );
    assert_eq!(
        d.fail("VM.set_memory_limits", json!([s, vm, "2", "1", "1", "1"])),
        ["MEMORY_CONSTRAINT_VIOLATION_ORDER"]
    );

    // Devices: a VIF and a CD VBD join the VM's sets; free device numbers
    // skip them.
    let net = d.ok(
        "network.create",
        json!([s, {"name_label": "n", "bridge": "xenbr0"}]),
    );
    let vif = d.ok(
        "VIF.create",
        json!([s, {"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500"}]),
    );
    let vbd = d.ok(
        "VBD.create",
        json!([s, {"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "3", "bootable": false,
                   "mode": "RO", "type": "CD", "empty": true}]),
    );
    let rec = d.ok("VM.get_record", json!([s, vm]));
    assert_eq!(rec["VIFs"], json!([vif]));
    assert_eq!(rec["VBDs"], json!([vbd]));
    assert_eq!(d.ok("network.get_VIFs", json!([s, net])), json!([vif]));
    let free = d.ok("VM.get_allowed_VIF_devices", json!([s, vm]));
    assert_eq!(free, json!(["1", "2", "3", "4", "5", "6"]));
    let free = d.ok("VM.get_allowed_VBD_devices", json!([s, vm]));
    assert!(!free.as_array().unwrap().iter().any(|x| x == "3"));
    assert_eq!(free.as_array().unwrap().len(), 254);

    // Clone: same configuration, its own devices, no default_template.
    let c = d.ok("VM.clone", json!([s, vm, "two"]));
    let crec = d.ok("VM.get_record", json!([s, c]));
    assert_eq!(crec["name_label"], "two");
    assert_eq!(crec["PV_kernel"], "/boot/vmlinuz");
    assert_eq!(crec["other_config"], json!({"keep": "me"}));
    assert_ne!(crec["uuid"], rec["uuid"]);
    assert_ne!(crec["metrics"], rec["metrics"]);
    assert_eq!(crec["VIFs"].as_array().unwrap().len(), 1);
    assert_ne!(crec["VIFs"], rec["VIFs"]);
    assert_eq!(crec["VBDs"].as_array().unwrap().len(), 1);

    // Destroy takes the VM's VBDs, VIFs and metrics with it.
    d.ok("VM.destroy", json!([s, vm]));
    assert_eq!(d.fail("VM.get_record", json!([s, vm]))[0], "HANDLE_INVALID");
    assert_eq!(
        d.fail("VIF.get_record", json!([s, vif]))[0],
        "HANDLE_INVALID"
    );
    assert_eq!(
        d.fail("VBD.get_record", json!([s, vbd]))[0],
        "HANDLE_INVALID"
    );
    assert_eq!(
        d.fail("VM_metrics.get_record", json!([s, m]))[0],
        "HANDLE_INVALID"
    );
    // The network no longer lists the destroyed VM's VIF, only the clone's.
    assert_eq!(d.ok("network.get_VIFs", json!([s, net])), crec["VIFs"]);
    assert_eq!(d.fail("VM.destroy", json!([s, vm]))[0], "HANDLE_INVALID");
}

#[test]
fn dom0_and_templates_are_there_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]);
    let s = d.login();
    let all = d.ok("VM.get_all_records", json!([s]));
    let all = all.as_object().unwrap();
    let dom0: Vec<&Value> = all
        .values()
        .filter(|v| v["is_control_domain"] == true)
        .collect();
    assert_eq!(dom0.len(), 1, "one control domain");
    assert_eq!(dom0[0]["power_state"], "Running");
    assert_eq!(dom0[0]["domid"], 0);
    // Null references are OpaqueRef:NULL, whatever default the published
    // definition prints for them ("Null").
    for v in all.values() {
        for f in ["snapshot_of", "parent", "suspend_VDI", "affinity"] {
            assert!(
                v[f].as_str().is_some_and(|r| r.starts_with("OpaqueRef:")),
                "{f} = {}",
                v[f]
            );
        }
    }
    let host = d.ok("host.get_all", json!([s]))[0].clone();
    assert_eq!(dom0[0]["resident_on"], host);
    assert_eq!(
        d.ok("host.get_resident_VMs", json!([s, host]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (tref, t) = all
        .iter()
        .find(|(_, v)| v["name_label"] == "Debian Bookworm 12 (PV, pygrub)")
        .expect("the pygrub template");
    assert_eq!(t["is_a_template"], true);
    assert_eq!(t["PV_bootloader"], "pygrub");
    assert!(t["other_config"]["disks"]
        .as_str()
        .unwrap()
        .contains("<provision>"));
    // A default template cannot be destroyed; a clone of it is an
    // ordinary (destroyable) template without default_template.
    assert_eq!(
        d.fail("VM.destroy", json!([s, tref])),
        ["VM_CANNOT_DELETE_DEFAULT_TEMPLATE", tref.as_str()]
    );
    let c = d.ok("VM.clone", json!([s, tref, "mine"]));
    let crec = d.ok("VM.get_record", json!([s, c]));
    assert_eq!(crec["is_a_template"], true);
    assert_eq!(crec["is_default_template"], false);
    assert!(crec["other_config"].get("default_template").is_none());
    d.ok("VM.destroy", json!([s, c]));
    // Dom0 cannot be destroyed or cloned.
    let dref = all
        .iter()
        .find(|(_, v)| v["is_control_domain"] == true)
        .unwrap()
        .0;
    assert_eq!(
        d.fail("VM.destroy", json!([s, dref]))[0],
        "OPERATION_NOT_ALLOWED"
    );
    // Restarting keeps one dom0 and one of each template.
    drop(d);
    let d = Daemon::start_in(dir.path(), &[]);
    let s = d.login();
    let n = d.ok("VM.get_all", json!([s])).as_array().unwrap().len();
    assert_eq!(n, all.len());
}

/// The live resource changes on a VM that does not run: vCPU hot-plug
/// needs a running VM; the dynamic range of a halted one is only its
/// record, with the reference's order check (a failed change keeps the
/// old range).
#[test]
fn live_changes_check_the_state_and_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]);
    let s = d.login();
    let vm = d.ok("VM.create", json!([s, vm_args("live")]));
    let vm_s = vm.as_str().unwrap();
    assert_eq!(
        d.fail("VM.set_VCPUs_number_live", json!([s, vm, "2"])),
        ["VM_BAD_POWER_STATE", vm_s, "running", "halted"]
    );
    d.ok(
        "VM.set_memory_dynamic_range",
        json!([s, vm, "134217728", "201326592"]),
    );
    let rec = d.ok("VM.get_record", json!([s, vm]));
    assert_eq!(rec["memory_dynamic_min"], 134217728);
    assert_eq!(rec["memory_dynamic_max"], 201326592);
    assert_eq!(rec["memory_target"], 134217728);
    // min above max, and max above static_max: refused, nothing changed.
    for (min, max) in [("201326592", "134217728"), ("134217728", "536870912")] {
        assert_eq!(
            d.fail("VM.set_memory_dynamic_range", json!([s, vm, min, max])),
            ["MEMORY_CONSTRAINT_VIOLATION_ORDER"]
        );
    }
    let rec = d.ok("VM.get_record", json!([s, vm]));
    assert_eq!(rec["memory_dynamic_max"], 201326592);
    assert!(rec["current_operations"].as_object().unwrap().is_empty());
}
