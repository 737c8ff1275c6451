//! The local file SR as a client sees it: there from the first start as
//! the pool's default, VDIs that are sparse image files in its directory
//! (`device_config:location`), created and destroyed with their records,
//! and the reference's errors for bad input. No guest uses them here (the
//! fake host probe); a guest writing to one is proven in the lab.

mod common;

use common::*;
use serde_json::json;
use std::path::PathBuf;

/// An int64 field as JSON-RPC carries it (a number, or a string in older
/// clients' style).
fn int(v: &serde_json::Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not an int: {v}"))
}

#[test]
fn the_local_sr_holds_vdis_as_image_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]);
    let s = d.login();
    let pool = d.ok("pool.get_all", json!([s]))[0].clone();
    let sr = d.ok("pool.get_default_SR", json!([s, pool]));
    let rec = d.ok("SR.get_record", json!([s, sr]));
    assert_eq!(rec["name_label"], "Local storage");
    assert_eq!(rec["type"], "file");
    assert_eq!(rec["shared"], false);
    assert!(int(&rec["physical_size"]) > 0);
    let pbd = d.ok("PBD.get_record", json!([s, rec["PBDs"][0]]));
    assert_eq!(pbd["currently_attached"], true);
    let location = PathBuf::from(pbd["device_config"]["location"].as_str().unwrap());
    assert!(
        location.starts_with(dir.path()),
        "{location:?} beside the database"
    );
    assert_eq!(
        d.ok(
            "SM.get_all_records_where",
            json!([s, "field \"type\" = \"file\""])
        )
        .as_object()
        .map(|m| m.len()),
        Some(1)
    );

    let vdi = d.ok(
        "VDI.create",
        json!([s, {"name_label": "disk0", "SR": sr, "virtual_size": "1073741824",
                   "type": "user", "sharable": false, "read_only": false, "other_config": {}}]),
    );
    let v = d.ok("VDI.get_record", json!([s, vdi]));
    assert_eq!(int(&v["virtual_size"]), 1 << 30);
    assert_eq!(v["location"], v["uuid"]);
    assert_eq!(v["managed"], true);
    let image = location.join(format!("{}.img", v["uuid"].as_str().unwrap()));
    assert_eq!(
        std::fs::metadata(&image).unwrap().len(),
        1 << 30,
        "{image:?}"
    );
    assert_eq!(d.ok("SR.get_VDIs", json!([s, sr])), json!([vdi]));

    // A VBD that is not attached goes with its VDI.
    let vm = d.ok(
        "VM.create",
        json!([s, {"name_label": "v", "memory_static_min": "134217728",
                   "memory_dynamic_min": "134217728", "memory_dynamic_max": "134217728",
                   "memory_static_max": "134217728", "VCPUs_max": "1", "VCPUs_at_startup": "1"}]),
    );
    let vbd = d.ok(
        "VBD.create",
        json!([s, {"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": true,
                   "mode": "RW", "type": "Disk", "empty": false}]),
    );
    assert_eq!(d.ok("VBD.get_currently_attached", json!([s, vbd])), false);
    d.ok("VDI.destroy", json!([s, vdi]));
    assert!(!image.exists(), "the image goes with the VDI");
    assert_eq!(
        d.fail("VDI.get_record", json!([s, vdi])),
        ["HANDLE_INVALID", "VDI", vdi.as_str().unwrap()]
    );
    assert_eq!(d.ok("VM.get_VBDs", json!([s, vm])), json!([]));

    // Bad input: nothing created.
    let files = || std::fs::read_dir(&location).unwrap().count();
    let before = files();
    assert_eq!(
        d.fail("VDI.create", json!([s, {"SR": sr, "virtual_size": "0"}]))[..2],
        ["INVALID_VALUE", "virtual_size"]
    );
    let huge = d.fail(
        "VDI.create",
        json!([s, {"SR": sr, "virtual_size": "9223372036854775807"}]),
    );
    assert_eq!(huge[0], "SR_FULL", "{huge:?}");
    assert_eq!(huge[1], "9223372036854775807");
    assert_eq!(
        d.fail(
            "VDI.create",
            json!([s, {"SR": "OpaqueRef:nope", "virtual_size": "1024"}])
        ),
        ["HANDLE_INVALID", "SR", "OpaqueRef:nope"]
    );
    assert_eq!(files(), before);
    assert_eq!(d.ok("VDI.get_all", json!([s])), json!([]));
}

#[test]
fn the_local_sr_is_found_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]);
    let s = d.login();
    let srs = d.ok("SR.get_all", json!([s]));
    drop(d);
    let d = Daemon::start_in(dir.path(), &[]);
    let s = d.login();
    assert_eq!(d.ok("SR.get_all", json!([s])), srs, "the same one SR");
    assert_eq!(d.ok("PBD.get_all", json!([s])).as_array().unwrap().len(), 1);
}
