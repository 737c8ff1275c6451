//! `VM.*`: the custom messages of the VM area that need no running domain:
//! creation with the reference's checks, destruction with the VM's own
//! objects, clone and copy of halted VMs and templates, memory and vCPU
//! limits, free device numbers. (Starting and stopping domains: xenops.)

pub mod checks;
mod devices;
mod live;
mod power;
pub mod provision;
mod suspend;
pub mod tracking;

use crate::db::Tx;
use crate::generated::errors;
use crate::generated::records::{DomainType, Vbd, Vif, Vm, VmMetrics, VmPowerState};
use crate::model::typed::{DateTime, Object, Ref, Wire};
use crate::model::value::V;
use crate::model::Msg;
use crate::rpc::{new_ref, new_uuid, BoxFut, Ctx, Impl, Req, R};
use std::sync::Arc;

pub const HANDLERS: &[(Msg, Impl)] = &[
    (Msg::VmCreate, Impl::Custom(create)),
    (Msg::VmDestroy, Impl::Custom(destroy)),
    (Msg::VmClone, Impl::Custom(clone)),
    (Msg::VmCopy, Impl::Custom(copy)),
    (Msg::VmProvision, Impl::Custom(provision::provision)),
    (Msg::VmSetMemoryLimits, Impl::Custom(set_memory_limits)),
    (Msg::VmSetVCPUsMax, Impl::Custom(set_vcpus_max)),
    (Msg::VmSetVCPUsAtStartup, Impl::Custom(set_vcpus_at_startup)),
    (
        Msg::VmGetAllowedVbdDevices,
        Impl::Custom(allowed_vbd_devices),
    ),
    (
        Msg::VmGetAllowedVifDevices,
        Impl::Custom(allowed_vif_devices),
    ),
    // The reference's own versions only guard keys it interprets; the
    // generic map update is what they do.
    (Msg::VmAddToOtherConfig, Impl::Generic),
    (Msg::VmRemoveFromOtherConfig, Impl::Generic),
    (Msg::VbdPlug, Impl::Custom(devices::vbd_plug)),
    (Msg::VbdUnplug, Impl::Custom(devices::vbd_unplug)),
    (Msg::VifPlug, Impl::Custom(devices::vif_plug)),
    (Msg::VifUnplug, Impl::Custom(devices::vif_unplug)),
    (Msg::VbdUnplugForce, Impl::Custom(devices::vbd_unplug_force)),
    (Msg::VifUnplugForce, Impl::Custom(devices::vif_unplug_force)),
    (Msg::VmStart, Impl::Custom(power::start)),
    (Msg::VmCleanShutdown, Impl::Custom(power::clean_shutdown)),
    (Msg::VmHardShutdown, Impl::Custom(power::hard_shutdown)),
    (Msg::VmShutdown, Impl::Custom(power::shutdown)),
    (Msg::VmCleanReboot, Impl::Custom(power::clean_reboot)),
    (Msg::VmHardReboot, Impl::Custom(power::hard_reboot)),
    (Msg::VmPause, Impl::Custom(power::pause)),
    (Msg::VmSuspend, Impl::Custom(suspend::suspend)),
    (Msg::VmResume, Impl::Custom(suspend::resume)),
    (Msg::VmUnpause, Impl::Custom(power::unpause)),
    (
        Msg::VmSetVCPUsNumberLive,
        Impl::Custom(live::set_vcpus_number_live),
    ),
    (
        Msg::VmSetMemoryDynamicRange,
        Impl::Custom(live::set_memory_dynamic_range),
    ),
    (
        Msg::VmSetMemoryDynamicMin,
        Impl::Custom(live::set_memory_dynamic_min),
    ),
    (
        Msg::VmSetMemoryDynamicMax,
        Impl::Custom(live::set_memory_dynamic_max),
    ),
    (
        Msg::VmSetMemoryStaticMin,
        Impl::Custom(set_memory_static_min),
    ),
    (
        Msg::VmSetMemoryStaticMax,
        Impl::Custom(set_memory_static_max),
    ),
];

/// Runs a handler's body as one database transaction off the runtime's
/// worker threads' critical path (the commit is awaited, not blocked on).
fn in_tx<T: Wire + Send + 'static>(
    ctx: Arc<Ctx>,
    f: impl FnOnce(&mut Tx) -> R<T> + Send + 'static,
) -> BoxFut {
    Box::pin(async move { ctx.db.transaction_async(f).await.map(|t| t.to_v()) })
}

fn get_vm(tx: &Tx, r: &Ref<Vm>) -> R<Vm> {
    tx.get("VM", r.as_str())
        .map(|rec| Vm::from_record(&rec))
        .ok_or_else(|| errors::handle_invalid("VM", r.as_str()))
}

fn put_vm(tx: &mut Tx, r: &Ref<Vm>, vm: &mut Vm) -> R<()> {
    vm.allowed_operations = checks::allowed_operations(vm);
    tx.create("VM", r.as_str(), vm.to_record())?;
    // A halted (or suspended) VM has no device plugged, whichever way it came to halt
    // (asked, by itself, destroyed behind our back, found so at start).
    if matches!(
        vm.power_state,
        VmPowerState::Halted | VmPowerState::Suspended
    ) {
        for b in &vm.VBDs {
            if let Some(mut vbd) = crate::api::storage::get::<Vbd>(tx, b) {
                if vbd.currently_attached || !vbd.device.is_empty() {
                    vbd.currently_attached = false;
                    vbd.device.clear();
                    tx.create(Vbd::CLASS, b.as_str(), vbd.to_record())?;
                }
            }
        }
        for v in &vm.VIFs {
            if let Some(mut vif) = crate::api::storage::get::<Vif>(tx, v) {
                if vif.currently_attached {
                    vif.currently_attached = false;
                    tx.create(Vif::CLASS, v.as_str(), vif.to_record())?;
                }
            }
        }
    }
    Ok(())
}

/// Changes the VM's record in a transaction of its own, for what the
/// hypervisor did with no client to answer (a failure is logged).
async fn update_vm(ctx: &Ctx, r: &Ref<Vm>, f: impl FnOnce(&mut Vm) + Send + 'static) {
    let r2 = r.clone();
    let res = ctx
        .db
        .transaction_async(move |tx| {
            let mut vm = get_vm(tx, &r2)?;
            f(&mut vm);
            put_vm(tx, &r2, &mut vm)
        })
        .await;
    if let Err(e) = res {
        tracing::warn!("VM {r}: record not updated: {e:?}");
    }
}

/// In one of `want` power states, else `VM_BAD_POWER_STATE`.
fn power_state_in(r: &Ref<Vm>, vm: &Vm, want: &[VmPowerState]) -> R<()> {
    if want.contains(&vm.power_state) {
        return Ok(());
    }
    Err(errors::vm_bad_power_state(
        r.as_str(),
        checks::power_state_name(want[0]),
        checks::power_state_name(vm.power_state),
    ))
}

/// A fresh VM_metrics object for a new VM.
fn new_metrics(tx: &mut Tx) -> R<Ref<VmMetrics>> {
    let r = Ref::<VmMetrics>::new(new_ref());
    let m = VmMetrics {
        uuid: new_uuid(),
        last_updated: DateTime::now(),
        ..VmMetrics::default()
    };
    tx.create("VM_metrics", r.as_str(), m.to_record())?;
    Ok(r)
}

fn create(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let rec = match q.args.first() {
        Some(V::M(m)) => m.clone(),
        _ => Default::default(),
    };
    in_tx(ctx, move |tx| {
        let mut vm = Vm::from_record(&rec);
        checks::memory_order(&vm)?;
        checks::vcpus(&vm)?;
        let r = Ref::<Vm>::new(new_ref());
        vm.uuid = new_uuid();
        // As the reference: a new VM is halted and on no host, whatever
        // the caller's record says.
        vm.power_state = VmPowerState::Halted;
        vm.resident_on = Ref::null();
        vm.VBDs.clear();
        vm.VIFs.clear();
        vm.consoles.clear();
        vm.is_control_domain = false;
        if vm.domain_type == DomainType::Unspecified {
            vm.domain_type = if vm.HVM_boot_policy.is_empty() {
                DomainType::Pv
            } else {
                DomainType::Hvm
            };
        }
        vm.metrics = new_metrics(tx)?;
        put_vm(tx, &r, &mut vm)?;
        Ok(r)
    })
}

fn destroy(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let r: Ref<Vm> = q.get(0);
    in_tx(ctx, move |tx| {
        let vm = get_vm(tx, &r)?;
        if vm.is_control_domain {
            return Err(errors::operation_not_allowed(
                "the control domain cannot be destroyed",
            ));
        }
        if vm.is_default_template {
            return Err(errors::vm_cannot_delete_default_template(r.as_str()));
        }
        power_state_in(&r, &vm, &[VmPowerState::Halted, VmPowerState::Suspended])?;
        // The VM's own objects go with it; its disks (VDIs) stay, as in
        // the reference (vm-uninstall is what deletes those).
        for b in &vm.VBDs {
            tx.delete("VBD", b.as_str())?;
        }
        for v in &vm.VIFs {
            tx.delete("VIF", v.as_str())?;
        }
        for c in &vm.consoles {
            tx.delete("console", c.as_str())?;
        }
        for m in [vm.metrics.as_str(), vm.guest_metrics.as_str()] {
            if tx.exists("VM_metrics", m) {
                tx.delete("VM_metrics", m)?;
            } else if tx.exists("VM_guest_metrics", m) {
                tx.delete("VM_guest_metrics", m)?;
            }
        }
        tx.delete("VM", r.as_str())?;
        Ok(())
    })
}

fn clone(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let (r, name): (Ref<Vm>, String) = (q.get(0), q.get(1));
    in_tx(ctx, move |tx| duplicate(tx, &r, &name, "clone"))
}

fn copy(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let (r, name): (Ref<Vm>, String) = (q.get(0), q.get(1));
    in_tx(ctx, move |tx| duplicate(tx, &r, &name, "copy"))
}

/// VM.clone / VM.copy of a halted VM or a template: a new VM with the
/// same configuration, its own metrics, VIFs (new MACs where the old ones
/// were generated) and CD drives. Disk VBDs need their VDIs cloned or
/// copied by the SR's driver, which the storage layer will do: until
/// then such a VM is refused, leaving nothing behind.
fn duplicate(tx: &mut Tx, r: &Ref<Vm>, name: &str, op: &str) -> R<Ref<Vm>> {
    let src = get_vm(tx, r)?;
    if !src.is_a_template {
        power_state_in(r, &src, &[VmPowerState::Halted])?;
    }
    if src.is_control_domain {
        return Err(errors::operation_not_allowed(
            "the control domain cannot be cloned",
        ));
    }
    let vbds: Vec<(Ref<Vbd>, Vbd)> = src
        .VBDs
        .iter()
        .filter_map(|b| {
            tx.get("VBD", b.as_str())
                .map(|x| (b.clone(), Vbd::from_record(&x)))
        })
        .collect();
    if vbds.iter().any(|(_, b)| !b.VDI.is_null() && !b.empty) {
        return Err(errors::operation_not_allowed(&format!(
            "VM.{op} of a VM with disks needs the SR driver's VDI {op}, which is not implemented yet"
        )));
    }
    let new = Ref::<Vm>::new(new_ref());
    let mut vm = src.clone();
    vm.uuid = new_uuid();
    vm.name_label = name.to_string();
    vm.is_default_template = false;
    // Xen Orchestra refuses to destroy a VM that still says it is a
    // default template; the reference drops the key from copies.
    vm.other_config.remove("default_template");
    vm.VBDs.clear();
    vm.VIFs.clear();
    vm.consoles.clear();
    vm.snapshots.clear();
    vm.children.clear();
    vm.resident_on = Ref::null();
    vm.guest_metrics = Ref::null();
    vm.metrics = new_metrics(tx)?;
    vm.current_operations.clear();
    put_vm(tx, &new, &mut vm)?;
    for (_, b) in vbds {
        let b = Vbd {
            uuid: new_uuid(),
            VM: new.clone(),
            device: String::new(),
            currently_attached: false,
            ..b
        };
        tx.create("VBD", &new_ref(), b.to_record())?;
    }
    for v in &src.VIFs {
        let Some(rec) = tx.get("VIF", v.as_str()) else {
            continue;
        };
        let mut vif = Vif::from_record(&rec);
        vif.uuid = new_uuid();
        vif.VM = new.clone();
        vif.currently_attached = false;
        if vif.MAC_autogenerated {
            vif.MAC = random_mac();
        }
        tx.create("VIF", &new_ref(), vif.to_record())?;
    }
    Ok(new)
}

/// VM.provision of a VM cloned from a template: it stops being a template.
/// The disks its provision spec (`other_config:disks`) lists and a
/// post-install script are not created yet: such a VM is refused,
/// unchanged. With neither (an empty
/// spec included) the keys stay, as the reference leaves them.
/// A locally administered unicast MAC, as the reference generates them
/// when a VIF's MAC is left empty.
pub fn random_mac() -> String {
    let b = *uuid::Uuid::new_v4().as_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (b[0] & 0xfe) | 0x02,
        b[1],
        b[2],
        b[3],
        b[4],
        b[5]
    )
}

fn set_memory_limits(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let r: Ref<Vm> = q.get(0);
    let (smin, smax, dmin, dmax): (i64, i64, i64, i64) = (q.get(1), q.get(2), q.get(3), q.get(4));
    in_tx(ctx, move |tx| {
        let mut vm = get_vm(tx, &r)?;
        power_state_in(&r, &vm, &[VmPowerState::Halted])?;
        vm.memory_static_min = smin;
        vm.memory_static_max = smax;
        vm.memory_dynamic_min = dmin;
        vm.memory_dynamic_max = dmax;
        checks::memory_order(&vm)?;
        put_vm(tx, &r, &mut vm)
    })
}

/// One end of a halted VM's static range, with the reference's order check.
fn set_memory_static_end(ctx: Arc<Ctx>, q: Req, top: bool) -> BoxFut {
    let (r, value): (Ref<Vm>, i64) = (q.get(0), q.get(1));
    in_tx(ctx, move |tx| {
        let mut vm = get_vm(tx, &r)?;
        power_state_in(&r, &vm, &[VmPowerState::Halted])?;
        if top {
            vm.memory_static_max = value;
        } else {
            vm.memory_static_min = value;
        }
        checks::memory_order(&vm)?;
        put_vm(tx, &r, &mut vm)
    })
}

fn set_memory_static_min(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    set_memory_static_end(ctx, q, false)
}

fn set_memory_static_max(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    set_memory_static_end(ctx, q, true)
}

fn set_vcpus_max(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let (r, n): (Ref<Vm>, i64) = (q.get(0), q.get(1));
    in_tx(ctx, move |tx| {
        let mut vm = get_vm(tx, &r)?;
        power_state_in(&r, &vm, &[VmPowerState::Halted])?;
        vm.VCPUs_max = n;
        checks::vcpus(&vm)?;
        put_vm(tx, &r, &mut vm)
    })
}

fn set_vcpus_at_startup(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let (r, n): (Ref<Vm>, i64) = (q.get(0), q.get(1));
    in_tx(ctx, move |tx| {
        let mut vm = get_vm(tx, &r)?;
        vm.VCPUs_at_startup = n;
        checks::vcpus(&vm)?;
        put_vm(tx, &r, &mut vm)
    })
}

fn allowed_devices(ctx: Arc<Ctx>, q: Req, vif: bool) -> BoxFut {
    let r: Ref<Vm> = q.get(0);
    in_tx(ctx, move |tx| {
        let vm = tx
            .get("VM", r.as_str())
            .ok_or_else(|| errors::handle_invalid("VM", r.as_str()))?;
        Ok(checks::allowed_devices(&vm, vif, |c, x| tx.get(c, x)))
    })
}

fn allowed_vbd_devices(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    allowed_devices(ctx, q, false)
}

fn allowed_vif_devices(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    allowed_devices(ctx, q, true)
}
