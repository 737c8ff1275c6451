//! VM.suspend and VM.resume, as the reference does them: the memory image
//! goes into a new VDI of type `suspend` ("Suspend image") on the VM's
//! suspend SR (the VM's own, else the pool's, else the host's), named in
//! `suspend_VDI` while the VM is Suspended; resume builds a new domain from
//! it and destroys the VDI. A failed suspend leaves the VM running and no
//! VDI behind; a failed resume leaves the VM suspended with its image.

use super::power::{
    claimed, devices, domid_of, free_memory, note_attached, spec, start_error, xen_error,
};
use super::{checks, power_state_in};
use crate::api::storage;
use crate::generated::errors;
use crate::generated::records::{Host, Pool, Sr, Vdi, VdiType, Vm, VmOperations, VmPowerState};
use crate::model::typed::{Object, Ref};
use crate::rpc::{void, BoxFut, Ctx, Req, R};
use crate::xenops::{XenHypervisor, Xenops};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The reference's room for an image: 1.2 x 1.05 x static max, plus
/// 100 MiB (the VDI is sparse: only what is written takes space).
fn image_size(static_max: i64) -> i64 {
    (static_max.max(0) as f64 * 1.2 * 1.05) as i64 + 100 * 1024 * 1024
}

/// `Helpers.choose_suspend_sr`: the VM's suspend SR if it exists, else
/// the pool's suspend image SR, else the host's.
fn suspend_sr(ctx: &Ctx, r: &Ref<Vm>, vm: &Vm) -> R<Ref<Sr>> {
    let host: Ref<Host> = Ref::new(ctx.host_ref.clone());
    let pool_sr = ctx
        .db
        .all_typed::<Pool>()
        .into_iter()
        .next()
        .map(|(_, p)| p.suspend_image_SR);
    let host_sr = ctx.db.get_typed::<Host>(&host).map(|h| h.suspend_image_sr);
    [Some(vm.suspend_SR.clone()), pool_sr, host_sr]
        .into_iter()
        .flatten()
        .find(|s| !s.is_null() && ctx.db.exists(Sr::CLASS, s.as_str()))
        .ok_or_else(|| errors::vm_no_suspend_sr(r.as_str()))
}

/// The image file of VDI `vdi` on this host.
async fn image_of(ctx: &Ctx, vdi: &Ref<Vdi>) -> R<std::path::PathBuf> {
    let host: Ref<Host> = Ref::new(ctx.host_ref.clone());
    let vdi = vdi.clone();
    ctx.db
        .transaction_async(move |tx| {
            let rec = storage::get::<Vdi>(tx, &vdi)
                .ok_or_else(|| errors::handle_invalid(Vdi::CLASS, vdi.as_str()))?;
            storage::vdi_image(tx, &vdi, &rec, &host)
        })
        .await
}

pub fn suspend(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let r: Ref<Vm> = q.get(0);
    Box::pin(async move {
        let check = |r: &Ref<Vm>, vm: &Vm| {
            if vm.is_a_template {
                return Err(errors::vm_is_template(r.as_str(), "suspend"));
            }
            power_state_in(r, vm, &[VmPowerState::Running])
        };
        let c = ctx.clone();
        let act = |x: Arc<Xenops<XenHypervisor>>, r: Ref<Vm>, vm: Vm| async move {
            let domid = domid_of(&vm)?;
            let sr = suspend_sr(&c, &r, &vm)?;
            let vdi = storage::create_vdi(
                &c,
                Vdi {
                    name_label: "Suspend image".into(),
                    name_description: "Suspend image".into(),
                    SR: sr,
                    virtual_size: image_size(vm.memory_static_max),
                    type_: VdiType::Suspend,
                    sm_config: BTreeMap::from([("vmhint".to_string(), vm.uuid.clone())]),
                    ..Vdi::default()
                },
            )
            .await?;
            let res = match image_of(&c, &vdi).await {
                Ok(image) => x.suspend(domid, &image).await.map_err(|e| xen_error(&r, e)),
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                if let Err(d) = storage::destroy_vdi(&c, &vdi).await {
                    tracing::warn!("VM {r}: suspend image {vdi} not removed: {d:?}");
                }
                return Err(e);
            }
            Ok(vdi)
        };
        claimed(&ctx, &r, VmOperations::Suspend, check, act, |vm, vdi| {
            vm.power_state = VmPowerState::Suspended;
            vm.suspend_VDI = vdi.clone();
            vm.domid = -1;
            vm.resident_on = Ref::null();
        })
        .await?;
        Ok(void())
    })
}

pub fn resume(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let (r, paused): (Ref<Vm>, bool) = (q.get(0), q.get(1));
    Box::pin(async move {
        let free = free_memory(&ctx).await?;
        let check = move |r: &Ref<Vm>, vm: &Vm| {
            power_state_in(r, vm, &[VmPowerState::Suspended])?;
            if vm.suspend_VDI.is_null() {
                return Err(errors::vm_has_no_suspend_vdi(r.as_str()));
            }
            checks::memory_order(vm)?;
            if vm.memory_static_max > free {
                return Err(errors::host_not_enough_free_memory(
                    &vm.memory_static_max.to_string(),
                    &free.to_string(),
                ));
            }
            Ok(())
        };
        let c = ctx.clone();
        let act = |x: Arc<Xenops<XenHypervisor>>, r: Ref<Vm>, vm: Vm| async move {
            let image = image_of(&c, &vm.suspend_VDI)
                .await
                .map_err(|_| errors::vm_has_no_suspend_vdi(r.as_str()))?;
            let devices = devices(&c, &r).await?;
            let spec = spec(&r, &vm, &devices)?;
            let domid = x
                .resume(&spec, &image)
                .await
                .map_err(|e| start_error(&c, &r, &devices, e))?;
            if !paused {
                if let Err(e) = x.unpause(domid).await {
                    let _ = x.destroy(domid).await;
                    return Err(xen_error(&r, e));
                }
            }
            Ok((domid, devices, vm.suspend_VDI.clone()))
        };
        let host: Ref<Host> = Ref::new(ctx.host_ref.clone());
        let (_, devices, image) = claimed(
            &ctx,
            &r,
            VmOperations::Resume,
            check,
            act,
            move |vm, (domid, _, _)| {
                vm.power_state = if paused {
                    VmPowerState::Paused
                } else {
                    VmPowerState::Running
                };
                vm.domid = i64::from(*domid);
                vm.resident_on = host;
                vm.suspend_VDI = Ref::null();
            },
        )
        .await?;
        note_attached(&ctx, &devices).await;
        // The image has served: the reference destroys it once resumed.
        if let Err(e) = storage::destroy_vdi(&ctx, &image).await {
            tracing::warn!("VM {r}: suspend image {image} not removed: {e:?}");
        }
        Ok(void())
    })
}

/// A suspended VM's hard shutdown: its image goes, and the VM is halted.
pub(super) async fn discard_image(ctx: &Arc<Ctx>, vm: &Vm) -> R<()> {
    if vm.suspend_VDI.is_null() {
        return Ok(());
    }
    match storage::destroy_vdi(ctx, &vm.suspend_VDI).await {
        Err(e) if e.0.first().map(String::as_str) == Some("HANDLE_INVALID") => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_has_the_reference_room() {
        let mib = 1024 * 1024;
        assert_eq!(image_size(64 * mib), 84_557_168 + 100 * mib);
        assert_eq!(image_size(-1), 100 * mib);
    }
}
