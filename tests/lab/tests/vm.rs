//! VMs on real Xen through the API, as a client drives them: a VM made from
//! the direct-kernel PV template boots the guest kit, and `xl list` agrees
//! with `power_state` at every step; clean and hard shutdown, start paused
//! and unpause; bad input gets the reference's errors and leaves no domain.
//! The same power cycle through `xe` in dom0, reboots included.
//! Needs a lab that is up (`lab up`, or `lab test`, which runs it).

use dom0_support::CALM_PROBE_ARGS;
use lab::hosts::LabState;
use lab::testing::{self, console_lines, lab, rpc_err, rpc_ok, sh, wait_console};
use lab::util::poll;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Each call; generous: a start under TCG.
const RPC: Duration = Duration::from_secs(900);

fn ok(st: &LabState, method: &str, params: Value) -> Value {
    rpc_ok(st, method, params, RPC)
}

fn fail(st: &LabState, method: &str, params: Value) -> Vec<String> {
    rpc_err(st, method, params, RPC)
}

/// `xl list` state column of domain `name`, or None if Xen has no such domain.
fn xl_state(st: &LabState, name: &str) -> Option<(u32, String)> {
    let out = sh(st, 1, "xl list");
    out.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&name)).then(|| {
            (
                f[1].parse().unwrap_or(0),
                f.get(4).unwrap_or(&"").to_string(),
            )
        })
    })
}

/// The direct-kernel PV template.
fn template(st: &LabState, s: &Value) -> String {
    let all = ok(st, "VM.get_all_records", json!([s]));
    all.as_object()
        .unwrap()
        .iter()
        .find(|(_, v)| v["name_label"] == "Linux PV (direct kernel boot)")
        .map(|(r, _)| r.clone())
        .expect("the direct-kernel PV template")
}

/// A VM from the template that boots the guest kit (dom0's kernel, the
/// kit's initramfs), as a user would make one.
fn guest_kit_vm(st: &LabState, s: &Value, name: &str) -> Value {
    let tpl = template(st, s);
    let vm = ok(st, "VM.clone", json!([s, tpl, name]));
    ok(st, "VM.set_is_a_template", json!([s, vm, false]));
    let kernel = sh(st, 1, "ls /boot/vmlinuz-* | sort | tail -1")
        .trim()
        .to_string();
    ok(st, "VM.set_PV_kernel", json!([s, vm, kernel]));
    ok(
        st,
        "VM.set_PV_ramdisk",
        json!([s, vm, "/opt/lab/guest/initrd.cpio"]),
    );
    ok(
        st,
        "VM.set_PV_args",
        json!([s, vm, format!("console=hvc0 quiet {CALM_PROBE_ARGS}")]),
    );
    vm
}

/// Polls until the VM's power state is `want` (the daemon follows Xen by
/// itself here: nothing asks it).
fn wait_power(st: &LabState, s: &Value, vm: &Value, want: &str) {
    poll(
        &format!("VM power_state {want}"),
        Duration::from_secs(300),
        Duration::from_secs(2),
        || Ok((ok(st, "VM.get_power_state", json!([s, vm])) == want).then_some(())),
    )
    .unwrap_or_else(|e| panic!("{e:#}\nxl list:\n{}", sh(st, 1, "xl list")));
}

fn login(st: &LabState) -> Value {
    Value::from(testing::login(st, Duration::from_secs(180)))
}

#[test]
#[ignore]
fn vm_guests_survive_a_daemon_kill_and_their_own_shutdowns_are_seen() {
    let st = lab("lab up");
    let s = login(&st);
    let name = "lab-api-tracked";
    let vm = guest_kit_vm(&st, &s, name);
    ok(&st, "VM.start", json!([s, vm, false, false]));
    let (domid, _) = xl_state(&st, name).expect("started");
    wait_console(
        &st,
        1,
        name,
        "lab-guest: init up",
        0,
        Duration::from_secs(300),
    );

    // kill -9 of the daemon: the guest runs on, and after the restart its
    // VM is still Running on the same domain; nothing is duplicated.
    sh(&st, 1, "pid=$(systemctl show -p MainPID --value xapi-rs); kill -9 $pid; sleep 1; systemctl start xapi-rs || true");
    let s = Value::from(testing::login(&st, Duration::from_secs(120)));
    assert_eq!(ok(&st, "VM.get_power_state", json!([s, vm])), "Running");
    assert_eq!(
        ok(&st, "VM.get_domid", json!([s, vm])).as_i64(),
        Some(domid as i64)
    );
    assert_eq!(
        xl_state(&st, name).map(|d| d.0),
        Some(domid),
        "the same domain runs"
    );
    let named = sh(&st, 1, &format!("xl list | awk '$1 == \"{name}\"' | wc -l"));
    assert_eq!(named.trim(), "1", "one domain of that name");

    // The guest powers off by itself (its control node, written as from
    // inside): actions_after_shutdown=destroy makes the VM Halted.
    sh(
        &st,
        1,
        &format!("xenstore-write /local/domain/{domid}/control/shutdown poweroff"),
    );
    wait_power(&st, &s, &vm, "Halted");
    assert_eq!(
        xl_state(&st, name),
        None,
        "the powered-off domain is destroyed"
    );

    // Destroyed behind the daemon's back (xl destroy): Halted too.
    ok(&st, "VM.start", json!([s, vm, false, false]));
    let (domid, _) = xl_state(&st, name).expect("started again");
    sh(&st, 1, &format!("xl destroy {domid}"));
    wait_power(&st, &s, &vm, "Halted");
    ok(&st, "VM.destroy", json!([s, vm]));
}

/// A Disk VBD of `vm` on `vdi` in slot `slot`, as a client creates one.
fn disk_vbd(st: &LabState, s: &Value, vm: &Value, vdi: &Value, slot: &str) -> Value {
    ok(
        st,
        "VBD.create",
        json!([s, {"VM": vm, "VDI": vdi, "userdevice": slot, "bootable": true,
                   "mode": "RW", "type": "Disk", "empty": false, "other_config": {},
                   "qos_algorithm_type": "", "qos_algorithm_params": {}}]),
    )
}

#[test]
#[ignore]
fn vm_a_vdi_is_the_guests_disk_and_a_vif_puts_it_on_the_lab_network() {
    let st = lab("lab up");
    let s = login(&st);
    let name = "lab-api-disk";
    let vm = guest_kit_vm(&st, &s, name);
    // The guest's address: dom0's own on xenbr0, plus 100 (each lab host
    // has its own network).
    let dom0_ip = sh(&st, 1, "ip -o -4 addr show dev xenbr0")
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next().map(str::to_string))
        .expect("dom0's address on xenbr0");
    let (net24, last) = dom0_ip.rsplit_once('.').unwrap();
    let guest_ip = format!("{net24}.{}", last.parse::<u32>().unwrap() + 100);
    ok(
        &st,
        "VM.set_PV_args",
        json!([
            s,
            vm,
            format!(
                "console=hvc0 quiet {CALM_PROBE_ARGS} lab.disk=from-the-api lab.ip={guest_ip}/24 lab.devices"
            )
        ]),
    );
    // The host's network is dom0's bridge, found on the daemon's first
    // start, with the host's PIF for its physical port.
    let nets = ok(&st, "network.get_all_records", json!([s]));
    let (net, rec) = nets
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, n)| n["bridge"] == "xenbr0")
        .map(|(r, n)| (r.clone(), n.clone()))
        .unwrap_or_else(|| panic!("a network on xenbr0: {nets:#}"));
    assert_eq!(rec["name_label"], "Pool-wide network associated with eth1");
    let pif = rec["PIFs"][0].clone();
    assert_eq!(ok(&st, "PIF.get_device", json!([s, pif])), "eth1");
    assert_eq!(ok(&st, "PIF.get_IP", json!([s, pif])), dom0_ip.as_str());
    let vif = ok(
        &st,
        "VIF.create",
        json!([s, {"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                   "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}}]),
    );
    let pool = ok(&st, "pool.get_all", json!([s]))[0].clone();
    let sr = ok(&st, "pool.get_default_SR", json!([s, pool]));
    let vdi = ok(
        &st,
        "VDI.create",
        json!([s, {"name_label": "lab disk", "SR": sr, "virtual_size": "8388608",
                   "type": "user", "sharable": false, "read_only": false, "other_config": {}}]),
    );
    // The VDI is a file of the SR's directory in dom0.
    let pbd = ok(&st, "SR.get_PBDs", json!([s, sr]))[0].clone();
    let dir = ok(&st, "PBD.get_device_config", json!([s, pbd]))["location"]
        .as_str()
        .unwrap()
        .to_string();
    let uuid = ok(&st, "VDI.get_uuid", json!([s, vdi]))
        .as_str()
        .unwrap()
        .to_string();
    let image = format!("{dir}/{uuid}.img");
    assert_eq!(sh(&st, 1, &format!("stat -c %s {image}")).trim(), "8388608");

    // Two VBDs in one slot: refused before any domain exists.
    let vbd = disk_vbd(&st, &s, &vm, &vdi, "0");
    let dup = disk_vbd(&st, &s, &vm, &vdi, "0");
    assert_eq!(
        fail(&st, "VM.start", json!([s, vm, false, false])),
        ["DEVICE_ALREADY_EXISTS", "0"]
    );
    assert_eq!(xl_state(&st, name), None, "no domain after a refused start");
    ok(&st, "VBD.destroy", json!([s, dup]));

    // Started: blkback serves the image, the guest sees an empty 8 MiB
    // xvda and writes its marker.
    ok(&st, "VM.start", json!([s, vm, false, false]));
    let (domid, _) = xl_state(&st, name).expect("started");
    wait_console(
        &st,
        1,
        name,
        "lab-guest: xvda marker written",
        0,
        Duration::from_secs(420),
    );
    let seen = console_lines(&st, 1, name, "lab-guest: xvda ");
    assert!(
        seen.iter()
            .any(|l| l.contains("xvda 16384 sectors, held: ")),
        "{seen:?}"
    );
    assert_eq!(ok(&st, "VBD.get_currently_attached", json!([s, vbd])), true);
    assert_eq!(ok(&st, "VBD.get_device", json!([s, vbd])), "xvda");
    let be = format!("/local/domain/0/backend/vbd/{domid}/51712");
    assert_eq!(sh(&st, 1, &format!("xenstore-read {be}/state")).trim(), "4");
    assert_eq!(
        fail(&st, "VDI.destroy", json!([s, vdi])),
        ["VDI_IN_USE", vdi.as_str().unwrap(), "destroy"]
    );

    // The VIF: netback's vif<domid>.0 on xenbr0, connected, the MAC the
    // VIF was given in the guest, and dom0 reaches the guest.
    assert_eq!(ok(&st, "VIF.get_currently_attached", json!([s, vif])), true);
    let mac = ok(&st, "VIF.get_MAC", json!([s, vif]))
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(mac.len(), 17, "a MAC was generated: {mac:?}");
    let up = wait_console(
        &st,
        1,
        name,
        "lab-guest: eth0 ",
        0,
        Duration::from_secs(300),
    )
    .join("\n");
    assert!(up.contains(&format!("eth0 {guest_ip}/24 {mac}")), "{up}");
    let vbe = format!("/local/domain/0/backend/vif/{domid}/0");
    poll(
        "the VIF's backend to connect",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || Ok((sh(&st, 1, &format!("xenstore-read {vbe}/state")).trim() == "4").then_some(())),
    )
    .unwrap();
    assert!(
        sh(&st, 1, &format!("ip -o link show dev vif{domid}.0")).contains("master xenbr0"),
        "{}",
        sh(&st, 1, "ip -o link")
    );
    poll(
        "dom0 to ping the guest",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || {
            Ok(sh(
                &st,
                1,
                &format!("ping -c 1 -W 2 {guest_ip} >/dev/null && echo reached || echo no"),
            )
            .contains("reached")
            .then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{:?}", console_lines(&st, 1, name, "")));

    // Hot-plug on the running guest: a second disk and a second VIF come
    // and go, seen by the guest; errors as the reference gives them.
    let devices =
        |set: &str| console_lines(&st, 1, name, &format!("lab-guest: devices [{set}]")).len();
    let wait_devices = |set: &str, before: usize| {
        wait_console(
            &st,
            1,
            name,
            &format!("lab-guest: devices [{set}]"),
            before,
            Duration::from_secs(120),
        );
    };
    wait_devices("xvda eth0", 0);
    let vdi2 = ok(
        &st,
        "VDI.create",
        json!([s, {"name_label": "hot disk", "SR": sr, "virtual_size": "4194304",
                   "type": "user", "sharable": false, "read_only": false, "other_config": {}}]),
    );
    let vbd2 = disk_vbd(&st, &s, &vm, &vdi2, "1");
    assert_eq!(
        fail(&st, "VBD.unplug", json!([s, vbd2])),
        ["DEVICE_ALREADY_DETACHED", vbd2.as_str().unwrap()]
    );
    ok(&st, "VBD.plug", json!([s, vbd2]));
    wait_devices("xvda xvdb eth0", 0);
    assert_eq!(ok(&st, "VBD.get_device", json!([s, vbd2])), "xvdb");
    assert_eq!(
        fail(&st, "VBD.plug", json!([s, vbd2])),
        ["DEVICE_ALREADY_ATTACHED", vbd2.as_str().unwrap()]
    );
    let before = devices("xvda eth0");
    ok(&st, "VBD.unplug", json!([s, vbd2]));
    wait_devices("xvda eth0", before);
    assert_eq!(
        ok(&st, "VBD.get_currently_attached", json!([s, vbd2])),
        false
    );
    assert!(
        !sh(&st, 1, "losetup -a")
            .contains(ok(&st, "VDI.get_uuid", json!([s, vdi2])).as_str().unwrap()),
        "the hot disk's loop device is detached"
    );
    let vif2 = ok(
        &st,
        "VIF.create",
        json!([s, {"device": "1", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                   "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}}]),
    );
    ok(&st, "VIF.plug", json!([s, vif2]));
    wait_devices("xvda eth0 eth1", 0);
    assert!(sh(&st, 1, &format!("ip -o link show dev vif{domid}.1")).contains("master xenbr0"));
    let before = devices("xvda eth0");
    ok(&st, "VIF.unplug", json!([s, vif2]));
    wait_devices("xvda eth0", before);
    assert_eq!(
        ok(&st, "VIF.get_currently_attached", json!([s, vif2])),
        false
    );
    poll(
        "netback to delete the unplugged VIF's device",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || Ok((!sh(&st, 1, "ls /sys/class/net").contains(&format!("vif{domid}.1"))).then_some(())),
    )
    .unwrap();
    ok(&st, "VIF.destroy", json!([s, vif2]));
    // The same through `xe` in dom0, the unplug forced (no handshake).
    let uuid_of = |class: &str, r: &Value| {
        ok(&st, &format!("{class}.get_uuid"), json!([s, r]))
            .as_str()
            .unwrap()
            .to_string()
    };
    let vif3 = xe0(
        &st,
        &format!(
            "vif-create vm-uuid={} network-uuid={} device=2",
            uuid_of("VM", &vm),
            uuid_of("network", &Value::from(net.clone()))
        ),
    )
    .trim()
    .to_string();
    let before = devices("xvda eth0 eth1");
    assert_eq!(xe0(&st, &format!("vif-plug uuid={vif3}")), "");
    wait_devices("xvda eth0 eth1", before);
    let before = devices("xvda eth0");
    assert_eq!(xe0(&st, &format!("vif-unplug uuid={vif3} force=true")), "");
    wait_devices("xvda eth0", before);
    poll(
        "netback to delete the forced-out VIF's device",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || Ok((!sh(&st, 1, "ls /sys/class/net").contains(&format!("vif{domid}.2"))).then_some(())),
    )
    .unwrap();
    assert_eq!(xe0(&st, &format!("vif-destroy uuid={vif3}")), "");
    ok(&st, "VBD.destroy", json!([s, vbd2]));
    ok(&st, "VDI.destroy", json!([s, vdi2]));

    // The guest's marker is in the image file.
    assert_eq!(
        sh(&st, 1, &format!("head -c 22 {image}")),
        "lab-disk=from-the-api\n"
    );

    // Suspend through xe: the memory image is a "Suspend image" VDI of
    // the SR, the domain and its devices are gone.
    let vm_uuid = uuid_of("VM", &vm);
    wait_console(
        &st,
        1,
        name,
        "lab-guest: xvda holds lab-disk=from-the-api",
        0,
        Duration::from_secs(60),
    );
    assert_eq!(xe0(&st, &format!("vm-suspend uuid={vm_uuid}")), "");
    assert_eq!(xe0_param(&st, &vm_uuid, "power-state"), "suspended");
    assert_eq!(xl_state(&st, name), None, "no domain while suspended");
    let svdi = ok(&st, "VM.get_suspend_VDI", json!([s, vm]));
    let srec = ok(&st, "VDI.get_record", json!([s, svdi]));
    assert_eq!(
        (
            srec["name_label"].as_str(),
            srec["type"].as_str(),
            srec["SR"].as_str()
        ),
        (Some("Suspend image"), Some("suspend"), sr.as_str())
    );
    let simage = format!("{dir}/{}.img", srec["uuid"].as_str().unwrap());
    assert_ne!(
        sh(&st, 1, &format!("du -k {simage} | cut -f1")).trim(),
        "0",
        "the image holds the guest's memory"
    );
    assert_eq!(
        ok(&st, "VBD.get_currently_attached", json!([s, vbd])),
        false
    );
    assert_eq!(
        sh(
            &st,
            1,
            &format!(
                "xenstore-exists /local/domain/0/backend/vbd/{domid} && echo left || echo gone"
            )
        )
        .trim(),
        "gone"
    );
    assert!(
        !sh(&st, 1, "losetup -a").contains(&uuid),
        "disk's loop device detached"
    );
    assert_eq!(
        fail(&st, "VM.suspend", json!([s, vm])),
        [
            "VM_BAD_POWER_STATE",
            vm.as_str().unwrap(),
            "running",
            "suspended"
        ]
    );

    // Resume through xe: a new domain from the image, the same guest (its
    // memory check goes on), its disk and network back; the image is gone.
    assert_eq!(xe0(&st, &format!("vm-resume uuid={vm_uuid}")), "");
    let domid = running_as(&st, &vm_uuid, name);
    assert_eq!(
        ok(&st, "VM.get_suspend_VDI", json!([s, vm])),
        "OpaqueRef:NULL"
    );
    assert_eq!(
        fail(&st, "VDI.get_uuid", json!([s, svdi]))[0],
        "HANDLE_INVALID"
    );
    assert_eq!(
        sh(
            &st,
            1,
            &format!("test -e {simage} && echo left || echo gone")
        )
        .trim(),
        "gone"
    );
    assert_eq!(ok(&st, "VBD.get_currently_attached", json!([s, vbd])), true);
    assert_eq!(ok(&st, "VIF.get_currently_attached", json!([s, vif])), true);
    poll(
        "dom0 to ping the resumed guest",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || {
            Ok(sh(
                &st,
                1,
                &format!("ping -c 1 -W 2 {guest_ip} >/dev/null && echo reached || echo no"),
            )
            .contains("reached")
            .then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{:?}", console_lines(&st, 1, name, "")));
    // The disk serves the resumed guest: what dom0 writes into the image
    // is what the guest reads.
    sh(
        &st,
        1,
        &format!(
            "printf 'lab-disk=after-resume\\n' | dd of={image} conv=notrunc 2>/dev/null; sync"
        ),
    );
    wait_console(
        &st,
        1,
        name,
        "lab-guest: xvda holds lab-disk=after-resume",
        0,
        Duration::from_secs(120),
    );
    let vbe = format!("/local/domain/0/backend/vif/{domid}/0");
    let be = format!("/local/domain/0/backend/vbd/{domid}/51712");

    // A clean shutdown unplugs it: the guest's bytes are in the file and
    // nothing of the disk is left in dom0.
    ok(&st, "VM.clean_shutdown", json!([s, vm]));
    assert_eq!(
        ok(&st, "VBD.get_currently_attached", json!([s, vbd])),
        false
    );
    assert_eq!(ok(&st, "VBD.get_device", json!([s, vbd])), "");
    assert_eq!(
        ok(&st, "VIF.get_currently_attached", json!([s, vif])),
        false
    );
    assert_eq!(
        sh(
            &st,
            1,
            &format!("xenstore-exists {vbe} && echo left || echo gone; ls /sys/class/net")
        ),
        "gone\neth0\neth1\nlo\nxenbr0\n",
        "no backend and no vif device left"
    );
    assert_eq!(
        sh(&st, 1, &format!("head -c 22 {image}")),
        "lab-disk=after-resume\n"
    );
    assert_eq!(
        sh(
            &st,
            1,
            &format!("xenstore-exists {be} && echo left || echo gone")
        )
        .trim(),
        "gone"
    );
    poll(
        "the loop device to be detached",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || Ok((!sh(&st, 1, "losetup -a").contains(&uuid)).then_some(())),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}
{}",
            sh(&st, 1, "losetup -a")
        )
    });

    assert_eq!(
        fail(&st, "VBD.plug", json!([s, vbd])),
        [
            "VM_BAD_POWER_STATE",
            vm.as_str().unwrap(),
            "running",
            "halted"
        ]
    );
    ok(&st, "VDI.destroy", json!([s, vdi]));
    assert_eq!(
        sh(
            &st,
            1,
            &format!("test -e {image} && echo left || echo gone")
        )
        .trim(),
        "gone"
    );
    ok(&st, "VM.destroy", json!([s, vm]));
}

#[test]
#[ignore]
fn vm_power_cycle_of_a_pv_guest_agrees_with_xl() {
    let st = lab("lab up");
    let s = ok(
        &st,
        "session.login_with_password",
        json!(["root", st.password]),
    );
    let all = ok(&st, "VM.get_all_records", json!([s]));
    let (tpl, _) = all
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, v)| v["name_label"] == "Linux PV (direct kernel boot)")
        .expect("the direct-kernel PV template");
    // A template cannot be started.
    assert_eq!(
        fail(&st, "VM.start", json!([s, tpl, false, false]))[..2],
        ["VM_IS_TEMPLATE".to_string(), tpl.clone()]
    );
    let name = "lab-api-vm";
    let vm = guest_kit_vm(&st, &s, name);

    // Start: running in Xen and in the record, with the same domid.
    ok(&st, "VM.start", json!([s, vm, false, false]));
    let rec = ok(&st, "VM.get_record", json!([s, vm]));
    assert_eq!(rec["power_state"], "Running");
    let (domid, state) = xl_state(&st, name).expect("xl list shows the started VM");
    assert_eq!(rec["domid"].as_i64(), Some(domid as i64));
    assert!(!state.contains('p'), "running, not paused: {state}");
    assert_eq!(rec["resident_on"], ok(&st, "host.get_all", json!([s]))[0]);
    wait_console(
        &st,
        1,
        name,
        "lab-guest: init up",
        0,
        Duration::from_secs(300),
    );
    // Starting it again: the reference's error, nothing changes.
    assert_eq!(
        fail(&st, "VM.start", json!([s, vm, false, false])),
        [
            "VM_BAD_POWER_STATE",
            vm.as_str().unwrap(),
            "halted",
            "running"
        ]
    );

    // Clean shutdown: the guest powers off; the domain is gone.
    ok(&st, "VM.clean_shutdown", json!([s, vm]));
    let rec = ok(&st, "VM.get_record", json!([s, vm]));
    assert_eq!(rec["power_state"], "Halted");
    assert_eq!(rec["resident_on"], "OpaqueRef:NULL");
    assert_eq!(xl_state(&st, name), None, "no domain after clean shutdown");
    assert_eq!(
        fail(&st, "VM.clean_shutdown", json!([s, vm]))[..4],
        [
            "VM_BAD_POWER_STATE".to_string(),
            vm.as_str().unwrap().into(),
            "running".into(),
            "halted".into()
        ]
    );

    // Start paused, unpause, hard shutdown.
    ok(&st, "VM.start", json!([s, vm, true, false]));
    assert_eq!(ok(&st, "VM.get_power_state", json!([s, vm])), "Paused");
    let (_, state) = xl_state(&st, name).expect("xl list shows the paused VM");
    assert!(state.contains('p'), "paused in Xen: {state}");
    ok(&st, "VM.unpause", json!([s, vm]));
    assert_eq!(ok(&st, "VM.get_power_state", json!([s, vm])), "Running");
    let (_, state) = xl_state(&st, name).expect("xl list shows the unpaused VM");
    assert!(!state.contains('p'), "unpaused in Xen: {state}");
    ok(&st, "VM.hard_shutdown", json!([s, vm]));
    assert_eq!(ok(&st, "VM.get_power_state", json!([s, vm])), "Halted");
    assert_eq!(xl_state(&st, name), None, "no domain after hard shutdown");

    // A kernel that does not exist: BOOTLOADER_FAILED, still halted, and
    // no half-built domain in Xen.
    ok(
        &st,
        "VM.set_PV_kernel",
        json!([s, vm, "/boot/no-such-kernel"]),
    );
    let e = fail(&st, "VM.start", json!([s, vm, false, false]));
    assert_eq!(
        e[..2],
        ["BOOTLOADER_FAILED".to_string(), vm.as_str().unwrap().into()],
        "{e:?}"
    );
    assert_eq!(ok(&st, "VM.get_power_state", json!([s, vm])), "Halted");
    assert_eq!(
        ok(&st, "VM.get_current_operations", json!([s, vm])),
        json!({})
    );
    assert_eq!(xl_state(&st, name), None, "no half-built domain");
    // Memory the host does not have.
    ok(
        &st,
        "VM.set_memory_limits",
        json!([
            s,
            vm,
            "134217728",
            "1099511627776",
            "268435456",
            "268435456"
        ]),
    );
    assert_eq!(
        fail(&st, "VM.start", json!([s, vm, false, false]))[0],
        "HOST_NOT_ENOUGH_FREE_MEMORY"
    );
    ok(&st, "VM.destroy", json!([s, vm]));
}

/// `xl list`'s VCPUs and Mem (MiB) columns for domain `name`: the vCPUs
/// online and the memory Xen has given it.
fn xl_vcpus_mem(st: &LabState, name: &str) -> Option<(u32, u64)> {
    let out = sh(st, 1, "xl list");
    out.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&name)).then(|| (f[3].parse().unwrap_or(0), f[2].parse().unwrap_or(0)))
    })
}

/// vCPU hot-plug and the balloon on a running guest, as Xen sees them: the
/// guest's own drivers follow what the API sets.
#[test]
#[ignore]
fn vm_vcpus_and_memory_change_live() {
    let st = lab("lab up");
    let s = login(&st);
    let name = "lab-api-live";
    let vm = guest_kit_vm(&st, &s, name);
    const MIB: i64 = 1 << 20;
    ok(&st, "VM.set_VCPUs_max", json!([s, vm, 2]));
    ok(&st, "VM.set_VCPUs_at_startup", json!([s, vm, 1]));
    ok(
        &st,
        "VM.set_memory_limits",
        json!([s, vm, 128 * MIB, 256 * MIB, 256 * MIB, 256 * MIB]),
    );
    ok(&st, "VM.start", json!([s, vm, false, false]));
    wait_console(
        &st,
        1,
        name,
        "lab-guest: init up",
        0,
        Duration::from_secs(300),
    );
    let seen = |what: &str, f: &dyn Fn((u32, u64)) -> bool| {
        poll(
            what,
            Duration::from_secs(300),
            Duration::from_secs(3),
            || Ok(xl_vcpus_mem(&st, name).filter(|v| f(*v))),
        )
        .unwrap_or_else(|e| panic!("{e:#}\nxl list:\n{}", sh(&st, 1, "xl list")))
    };
    seen("1 vCPU online at boot", &|(v, _)| v == 1);

    // vCPU 2 comes online; the record and the metrics follow.
    ok(&st, "VM.set_VCPUs_number_live", json!([s, vm, 2]));
    seen("2 vCPUs online", &|(v, _)| v == 2);
    assert_eq!(ok(&st, "VM.get_VCPUs_at_startup", json!([s, vm])), 2);
    let m = ok(&st, "VM.get_metrics", json!([s, vm]));
    assert_eq!(ok(&st, "VM_metrics.get_VCPUs_number", json!([s, m])), 2);
    // Beyond VCPUs_max: the reference's error, nothing changes.
    assert_eq!(
        fail(&st, "VM.set_VCPUs_number_live", json!([s, vm, 3]))[0],
        "INVALID_VALUE"
    );
    ok(&st, "VM.set_VCPUs_number_live", json!([s, vm, 1]));
    seen("back to 1 vCPU", &|(v, _)| v == 1);

    // The balloon: down to the new top of the range, then up again.
    ok(
        &st,
        "VM.set_memory_dynamic_range",
        json!([s, vm, 128 * MIB, 160 * MIB]),
    );
    seen("the guest ballooned down to 160 MiB", &|(_, mem)| {
        mem <= 161
    });
    assert_eq!(
        sh(
            &st,
            1,
            &format!("xenstore-read /local/domain/$(xl domid {name})/memory/target")
        )
        .trim(),
        (160 * 1024).to_string()
    );
    ok(
        &st,
        "VM.set_memory_dynamic_range",
        json!([s, vm, 128 * MIB, 256 * MIB]),
    );
    seen("the guest ballooned up to 256 MiB", &|(_, mem)| mem >= 250);
    assert_eq!(ok(&st, "VM.get_power_state", json!([s, vm])), "Running");
    ok(&st, "VM.hard_shutdown", json!([s, vm]));
    ok(&st, "VM.destroy", json!([s, vm]));
}

/// `xe` in dom0 as its administrator runs it (the local socket): stdout.
/// Panics, with what it printed, if it fails.
fn xe0(st: &LabState, args: &str) -> String {
    sh(st, 1, &format!("xe -u root -pw '{}' {args}", st.password))
}

fn xe0_param(st: &LabState, uuid: &str, name: &str) -> String {
    xe0(st, &format!("vm-param-get uuid={uuid} param-name={name}"))
        .trim_end()
        .to_string()
}

/// Running in the record and in Xen, on the domain the record names.
fn running_as(st: &LabState, uuid: &str, name: &str) -> u32 {
    assert_eq!(xe0_param(st, uuid, "power-state"), "running");
    let (domid, state) = xl_state(st, name).expect("xl list shows the VM");
    assert!(!state.contains('p'), "running, not paused: {state}");
    assert_eq!(xe0_param(st, uuid, "dom-id"), domid.to_string());
    domid
}

#[test]
#[ignore]
fn vm_power_cycle_through_xe_in_dom0_with_reboots() {
    let st = lab("lab up");
    let t0 = Instant::now();
    let name = "lab-xe-vm";
    // Installed from the template: prints the new VM's uuid alone.
    let out = xe0(
        &st,
        &format!("vm-install template='Linux PV (direct kernel boot)' new-name-label={name}"),
    );
    let uuid = out.trim_end().to_string();
    assert_eq!(uuid.len(), 36, "vm-install printed {out:?}");
    assert_eq!(xe0_param(&st, &uuid, "is-a-template"), "false");
    let kernel = sh(&st, 1, "ls /boot/vmlinuz-* | sort | tail -1")
        .trim()
        .to_string();
    xe0(
        &st,
        &format!(
            "vm-param-set uuid={uuid} PV-kernel={kernel} PV-ramdisk=/opt/lab/guest/initrd.cpio PV-args='console=hvc0 quiet {CALM_PROBE_ARGS}'"
        ),
    );

    // Start: nothing printed; running in both.
    assert_eq!(xe0(&st, &format!("vm-start uuid={uuid}")), "");
    let d1 = running_as(&st, &uuid, name);
    wait_console(
        &st,
        1,
        name,
        "lab-guest: init up",
        0,
        Duration::from_secs(300),
    );

    // Clean reboot: the guest is asked and reboots; a new domain, running,
    // booting again.
    assert_eq!(xe0(&st, &format!("vm-reboot vm={name}")), "");
    let d2 = running_as(&st, &uuid, name);
    assert_ne!(d2, d1, "a new domain after vm-reboot");
    wait_console(
        &st,
        1,
        name,
        "lab-guest: init up",
        1,
        Duration::from_secs(300),
    );

    // Hard reboot: destroyed and rebuilt at once.
    assert_eq!(xe0(&st, &format!("vm-reboot uuid={uuid} --force")), "");
    let d3 = running_as(&st, &uuid, name);
    assert!(d3 != d2 && d3 != d1, "a new domain after vm-reboot --force");
    wait_console(
        &st,
        1,
        name,
        "lab-guest: init up",
        2,
        Duration::from_secs(300),
    );
    let named = sh(&st, 1, &format!("xl list | awk '$1 == \"{name}\"' | wc -l"));
    assert_eq!(named.trim(), "1", "one domain of that name");

    // The guest reboots by itself (its control node, written as from
    // inside): actions_after_reboot=restart, the path of vm-reboot --force.
    sh(
        &st,
        1,
        &format!("xenstore-write /local/domain/{d3}/control/shutdown reboot"),
    );
    let d4 = poll(
        "a new domain after the guest's own reboot",
        Duration::from_secs(300),
        Duration::from_secs(2),
        || {
            let d = xe0_param(&st, &uuid, "dom-id");
            let ops = xe0_param(&st, &uuid, "current-operations");
            Ok((d != d3.to_string() && d != "-1" && ops.is_empty()).then_some(()))
        },
    )
    .map(|()| running_as(&st, &uuid, name))
    .unwrap_or_else(|e| panic!("{e:#}\nxl list:\n{}", sh(&st, 1, "xl list")));
    assert!(d4 != d3, "a new domain after the guest's reboot");
    wait_console(
        &st,
        1,
        name,
        "lab-guest: init up",
        3,
        Duration::from_secs(300),
    );

    // Suspended, it cannot be shut down cleanly; by force its image goes
    // and it is halted; it starts again from scratch.
    assert_eq!(xe0(&st, &format!("vm-suspend uuid={uuid}")), "");
    assert_eq!(xe0_param(&st, &uuid, "power-state"), "suspended");
    let image = xe0_param(&st, &uuid, "suspend-VDI-uuid");
    assert_eq!(image.len(), 36, "a suspend image: {image:?}");
    let o = st
        .exec(
            1,
            &format!("xe -u root -pw '{}' vm-shutdown uuid={uuid}", st.password),
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).ends_with("expected: running\nactual: suspended\n"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(xe0(&st, &format!("vm-shutdown uuid={uuid} --force")), "");
    assert_eq!(xe0_param(&st, &uuid, "power-state"), "halted");
    assert!(
        !xe0(&st, "vdi-list --minimal").contains(&image),
        "the suspend image is gone"
    );
    assert_eq!(xl_state(&st, name), None, "no domain");
    assert_eq!(xe0(&st, &format!("vm-start uuid={uuid}")), "");
    running_as(&st, &uuid, name);
    wait_console(
        &st,
        1,
        name,
        "lab-guest: init up",
        4,
        Duration::from_secs(300),
    );

    // Clean shutdown: halted, no domain.
    assert_eq!(xe0(&st, &format!("vm-shutdown uuid={uuid}")), "");
    assert_eq!(xe0_param(&st, &uuid, "power-state"), "halted");
    assert_eq!(xl_state(&st, name), None, "no domain after vm-shutdown");
    // A halted VM cannot be rebooted: the reference's error, exit 1.
    let o = st
        .exec(
            1,
            &format!("xe -u root -pw '{}' vm-reboot uuid={uuid}", st.password),
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.ends_with(&format!(
            "vm: {uuid} ({name})\nexpected: running\nactual: halted\n"
        )),
        "{err}"
    );

    // Uninstall, forced: gone from the database.
    let out = xe0(&st, &format!("vm-uninstall uuid={uuid} --force"));
    assert_eq!(
        out,
        format!("The following items are about to be destroyed\nVM : {uuid} ({name})\nAll objects destroyed\n")
    );
    assert!(!xe0(&st, "vm-list --minimal").contains(&uuid));
    assert_eq!(xl_state(&st, name), None);
    println!(
        "xe power cycle (install, start, reboot, reboot --force, the guest's own reboot, suspend, shutdown --force, start, shutdown, uninstall): {:.0} s",
        t0.elapsed().as_secs_f64()
    );
}
