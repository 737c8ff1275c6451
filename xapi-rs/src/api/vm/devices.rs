//! Hot-plug: `VBD.plug/unplug` and `VIF.plug/unplug` on a running VM.
//! The device is claimed in its own `current_operations` while Xen is
//! asked (a second operation on it gets `OTHER_OPERATION_IN_PROGRESS`),
//! and a VM with an operation of its own in progress is left alone.
//! Unplug is the clean handshake: a guest that keeps the device (in use)
//! gets `DEVICE_DETACH_REJECTED` and keeps it.

use super::power::{disk_of, nic_of, xenops};
use super::{get_vm, power_state_in};
use crate::api::storage;
use crate::db::Tx;
use crate::generated::errors;
use crate::generated::records::{Host, Vbd, VbdOperations, Vif, VifOperations, Vm, VmPowerState};
use crate::model::typed::{Object, Ref, Wire};
use crate::rpc::{new_ref, void, ApiError, BoxFut, Ctx, Req, R};
use crate::xenops::XenopsError;
use std::sync::Arc;
use std::time::Duration;

/// How long a guest has to let a device go (the reference: 1200 s for
/// a clean unplug; tools waiting on a task rarely wait that long).
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(120);

/// The running VM's domain, refusing a VM that is not running or has an
/// operation in progress.
fn running_domid(tx: &Tx, vm_ref: &Ref<Vm>) -> R<u32> {
    let vm = get_vm(tx, vm_ref)?;
    if let Some((task, op)) = vm.current_operations.iter().next() {
        return Err(errors::other_operation_in_progress(
            "VM",
            vm_ref.as_str(),
            op.to_v().as_str().unwrap_or(""),
            task,
        ));
    }
    power_state_in(vm_ref, &vm, &[VmPowerState::Running])?;
    u32::try_from(vm.domid).map_err(|_| errors::internal_error("the VM has no domain"))
}

fn detach_error(class: &str, r: &str, e: XenopsError) -> ApiError {
    match e {
        XenopsError::DetachTimeout { .. } => {
            errors::device_detach_rejected(class, r, &e.to_string())
        }
        XenopsError::NoSuchDevice { .. } => errors::device_already_detached(r),
        XenopsError::DeviceExists { .. } => errors::device_already_attached(r),
        e => errors::internal_error(&e.to_string()),
    }
}

/// `VBD.plug`: the VBD's disk into its running VM.
pub fn vbd_plug(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    vbd_op(ctx, q, VbdOperations::Plug)
}

/// `VBD.unplug`: the VBD's disk out of its running VM, if the guest
/// lets it go.
pub fn vbd_unplug(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    vbd_op(ctx, q, VbdOperations::Unplug)
}

/// `VBD.unplug_force`: the VBD's disk out of its running VM at once.
pub fn vbd_unplug_force(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    vbd_op(ctx, q, VbdOperations::UnplugForce)
}

fn vbd_op(ctx: Arc<Ctx>, q: Req, op: VbdOperations) -> BoxFut {
    let r: Ref<Vbd> = q.get(0);
    Box::pin(async move {
        let host: Ref<Host> = Ref::new(ctx.host_ref.clone());
        let key = new_ref();
        let (r2, k2) = (r.clone(), key.clone());
        let (domid, disk) = ctx
            .db
            .transaction_async(move |tx| {
                let mut vbd = storage::get::<Vbd>(tx, &r2)
                    .ok_or_else(|| errors::handle_invalid("VBD", r2.as_str()))?;
                if let Some((task, other)) = vbd.current_operations.iter().next() {
                    return Err(errors::other_operation_in_progress(
                        "VBD",
                        r2.as_str(),
                        other.to_v().as_str().unwrap_or(""),
                        task,
                    ));
                }
                let domid = running_domid(tx, &vbd.VM)?;
                match (op, vbd.currently_attached) {
                    (VbdOperations::Plug, true) => {
                        return Err(errors::device_already_attached(r2.as_str()))
                    }
                    (VbdOperations::Unplug | VbdOperations::UnplugForce, false) => {
                        return Err(errors::device_already_detached(r2.as_str()))
                    }
                    _ => {}
                }
                let (_, disk) = disk_of(tx, &r2, &host)?.ok_or_else(|| {
                    errors::operation_not_allowed("the VBD has no VDI to plug (an empty drive)")
                })?;
                if op == VbdOperations::Plug {
                    let vm = get_vm(tx, &vbd.VM)?;
                    for other in vm.VBDs.iter().filter(|b| **b != r2) {
                        let Some(o) = storage::get::<Vbd>(tx, other) else {
                            continue;
                        };
                        if o.currently_attached && o.userdevice == vbd.userdevice {
                            return Err(errors::device_already_exists(&vbd.userdevice));
                        }
                    }
                }
                vbd.current_operations.insert(k2, op);
                tx.create(Vbd::CLASS, r2.as_str(), vbd.to_record())?;
                Ok((domid, disk))
            })
            .await?;
        // The record is checked first, so bad input gets its own error on
        // any host.
        let res = match xenops(&ctx) {
            Err(e) => Err(e),
            Ok(x) => match op {
                VbdOperations::Plug => x.plug_disk(domid, &disk).await,
                VbdOperations::UnplugForce => x.unplug_disk_force(domid, &disk).await,
                _ => x.unplug_disk(domid, &disk, UNPLUG_TIMEOUT).await,
            }
            .map_err(|e| detach_error("VBD", r.as_str(), e)),
        };
        let ok = res.is_ok();
        let name = disk.name();
        let r2 = r.clone();
        ctx.db
            .transaction_async(move |tx| {
                if let Some(mut vbd) = storage::get::<Vbd>(tx, &r2) {
                    vbd.current_operations.remove(&key);
                    if ok {
                        vbd.currently_attached = op == VbdOperations::Plug;
                        vbd.device = if vbd.currently_attached {
                            name
                        } else {
                            String::new()
                        };
                    }
                    tx.create(Vbd::CLASS, r2.as_str(), vbd.to_record())?;
                }
                Ok::<_, ApiError>(())
            })
            .await?;
        res?;
        Ok(void())
    })
}

/// `VIF.plug`: the VIF into its running VM, on its network's bridge.
pub fn vif_plug(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    vif_op(ctx, q, VifOperations::Plug, false)
}

/// `VIF.unplug`: the VIF out of its running VM.
pub fn vif_unplug(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    vif_op(ctx, q, VifOperations::Unplug, false)
}

/// `VIF.unplug_force`: the VIF out of its running VM at once (the
/// reference has no operation of its own for it: `unplug` is claimed).
pub fn vif_unplug_force(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    vif_op(ctx, q, VifOperations::Unplug, true)
}

fn vif_op(ctx: Arc<Ctx>, q: Req, op: VifOperations, force: bool) -> BoxFut {
    let r: Ref<Vif> = q.get(0);
    Box::pin(async move {
        let host: Ref<Host> = Ref::new(ctx.host_ref.clone());
        let key = new_ref();
        let (r2, k2, h2) = (r.clone(), key.clone(), host.clone());
        let (domid, nic) = ctx
            .db
            .transaction_async(move |tx| {
                let vif = storage::get::<Vif>(tx, &r2)
                    .ok_or_else(|| errors::handle_invalid("VIF", r2.as_str()))?;
                if let Some((task, other)) = vif.current_operations.iter().next() {
                    return Err(errors::other_operation_in_progress(
                        "VIF",
                        r2.as_str(),
                        other.to_v().as_str().unwrap_or(""),
                        task,
                    ));
                }
                let domid = running_domid(tx, &vif.VM)?;
                match (op, vif.currently_attached) {
                    (VifOperations::Plug, true) => {
                        return Err(errors::device_already_attached(r2.as_str()))
                    }
                    (VifOperations::Unplug, false) => {
                        return Err(errors::device_already_detached(r2.as_str()))
                    }
                    _ => {}
                }
                if op == VifOperations::Plug {
                    let vm = get_vm(tx, &vif.VM)?;
                    for other in vm.VIFs.iter().filter(|v| **v != r2) {
                        let Some(o) = storage::get::<Vif>(tx, other) else {
                            continue;
                        };
                        if o.currently_attached && o.device == vif.device {
                            return Err(errors::device_already_exists(&vif.device));
                        }
                    }
                }
                // Read (and given a MAC) before it is claimed.
                let (_, net, nic) = nic_of(tx, &r2, &h2)?
                    .ok_or_else(|| errors::handle_invalid("VIF", r2.as_str()))?;
                let mut vif = storage::get::<Vif>(tx, &r2)
                    .ok_or_else(|| errors::handle_invalid("VIF", r2.as_str()))?;
                vif.current_operations.insert(k2, op);
                tx.create(Vif::CLASS, r2.as_str(), vif.to_record())?;
                Ok((domid, (net, nic)))
            })
            .await?;
        let (net, nic) = nic;
        let res = match xenops(&ctx) {
            Err(e) => Err(e),
            Ok(x) => match op {
                VifOperations::Plug => x.plug_nic(domid, &nic).await,
                _ if force => x.unplug_nic_force(domid, &nic).await,
                _ => x.unplug_nic(domid, &nic, UNPLUG_TIMEOUT).await,
            }
            .map_err(|e| match e {
                XenopsError::NoBridge(_) => {
                    errors::host_cannot_attach_network(host.as_str(), net.as_str())
                }
                e => detach_error("VIF", r.as_str(), e),
            }),
        };
        let ok = res.is_ok();
        let r2 = r.clone();
        ctx.db
            .transaction_async(move |tx| {
                if let Some(mut vif) = storage::get::<Vif>(tx, &r2) {
                    vif.current_operations.remove(&key);
                    if ok {
                        vif.currently_attached = op == VifOperations::Plug;
                    }
                    tx.create(Vif::CLASS, r2.as_str(), vif.to_record())?;
                }
                Ok::<_, ApiError>(())
            })
            .await?;
        res?;
        Ok(void())
    })
}
