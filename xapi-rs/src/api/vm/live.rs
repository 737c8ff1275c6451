//! Changes to a running VM's resources: `set_VCPUs_number_live` (vCPU
//! hot-plug through `cpu/N/availability`) and `set_memory_dynamic_range`
//! (the balloon target through `memory/target`, for a running VM; the
//! record alone for a halted one). Like the power operations, each claims
//! `current_operations` and changes the record only after Xen and xenstore
//! have their part.

use super::power::{claimed, claimed_with, domid_of, xen_error, xenops};
use super::{checks, power_state_in};
use crate::generated::errors;
use crate::generated::records::{DomainType, Vm, VmMetrics, VmOperations, VmPowerState};
use crate::model::typed::{DateTime, Ref};
use crate::model::value::V;
use crate::rpc::{BoxFut, Ctx, Req};
use crate::xenops::{XenHypervisor, Xenops};
use std::sync::Arc;

fn kib(bytes: i64) -> u64 {
    bytes.max(0) as u64 / 1024
}

pub fn set_vcpus_number_live(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let (r, n): (Ref<Vm>, i64) = (q.get(0), q.get(1));
    Box::pin(async move {
        let check = move |r: &Ref<Vm>, vm: &Vm| {
            power_state_in(r, vm, &[VmPowerState::Running])?;
            if vm.domain_type == DomainType::Hvm {
                return Err(errors::operation_not_allowed("HVM VMs cannot hotplug CPUs"));
            }
            if n < 1 || n > vm.VCPUs_max {
                // The reference's words in the field's place.
                return Err(errors::invalid_value(
                    "VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max",
                    &n.to_string(),
                ));
            }
            Ok(())
        };
        let act = |x: Arc<Xenops<XenHypervisor>>, r: Ref<Vm>, vm: Vm| async move {
            let domid = domid_of(&vm)?;
            let max = vm.VCPUs_max.clamp(1, u32::MAX as i64) as u32;
            x.set_vcpus_online(domid, n as u32, max)
                .await
                .map_err(|e| xen_error(&r, e))?;
            Ok(vm.metrics.clone())
        };
        let metrics = claimed(
            &ctx,
            &r,
            VmOperations::ChangingVCPUsLive,
            check,
            act,
            move |vm, _| vm.VCPUs_at_startup = n,
        )
        .await?;
        set_metrics(&ctx, &metrics, move |m| m.VCPUs_number = n);
        Ok(V::S(String::new()))
    })
}

pub fn set_memory_dynamic_range(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let (r, min, max): (Ref<Vm>, i64, i64) = (q.get(0), q.get(1), q.get(2));
    Box::pin(dynamic_range(ctx, r, min, max))
}

/// `set_memory_dynamic_min`/`max`: the range with one end moved.
fn dynamic_end(ctx: Arc<Ctx>, q: Req, top: bool) -> BoxFut {
    let (r, value): (Ref<Vm>, i64) = (q.get(0), q.get(1));
    Box::pin(async move {
        let vm: Vm = ctx
            .db
            .get_typed(&r)
            .ok_or_else(|| errors::handle_invalid("VM", r.as_str()))?;
        let (min, max) = if top {
            (vm.memory_dynamic_min, value)
        } else {
            (value, vm.memory_dynamic_max)
        };
        dynamic_range(ctx, r, min, max).await
    })
}

pub fn set_memory_dynamic_min(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    dynamic_end(ctx, q, false)
}

pub fn set_memory_dynamic_max(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    dynamic_end(ctx, q, true)
}

async fn dynamic_range(ctx: Arc<Ctx>, r: Ref<Vm>, min: i64, max: i64) -> crate::rpc::R<V> {
    {
        let check = move |r: &Ref<Vm>, vm: &Vm| {
            power_state_in(r, vm, &[VmPowerState::Running, VmPowerState::Halted])?;
            let mut want = vm.clone();
            want.memory_dynamic_min = min;
            want.memory_dynamic_max = max;
            checks::memory_order(&want)
        };
        let c2 = ctx.clone();
        let act = |r: Ref<Vm>, vm: Vm| async move {
            if vm.power_state == VmPowerState::Running {
                // No squeezer shares the host's memory out between the VMs'
                // ranges: a running VM's target is the top of its range.
                let x = xenops(&c2)?;
                let domid = domid_of(&vm)?;
                x.set_memory_target(domid, kib(vm.memory_dynamic_max), kib(max))
                    .await
                    .map_err(|e| xen_error(&r, e))?;
            }
            Ok(())
        };
        claimed_with(
            &ctx,
            &r,
            VmOperations::ChangingDynamicRange,
            check,
            act,
            move |vm, _| {
                vm.memory_dynamic_min = min;
                vm.memory_dynamic_max = max;
                // Unused since the reference's 5.6, kept equal to the
                // minimum as it does, for older clients' validation.
                vm.memory_target = min;
            },
        )
        .await?;
        Ok(V::S(String::new()))
    }
}

/// Updates the VM's metrics object (best effort: the change has been made).
fn set_metrics(ctx: &Ctx, m: &Ref<VmMetrics>, f: impl FnOnce(&mut VmMetrics)) {
    let _ = ctx.db.update_typed(m, |m| {
        f(m);
        m.last_updated = DateTime::now();
    });
}
