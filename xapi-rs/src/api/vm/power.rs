//! VM power operations on this host's hypervisor: start (direct-kernel PV),
//! clean and hard shutdown, shutdown (clean, then hard), clean and hard
//! reboot (also the path of a guest's own reboot), pause, unpause.
//! Each marks the VM's `current_operations` for its duration, so a second
//! operation on the same VM is refused with `OTHER_OPERATION_IN_PROGRESS`,
//! and changes the record only once the hypervisor has done its part: a
//! failed start leaves the VM halted and no domain behind.

use super::{checks, get_vm, power_state_in, put_vm, update_vm};
use crate::api::storage;
use crate::generated::errors;
use crate::generated::records::{
    Host, Network, Vbd, VbdMode, VbdType, Vdi, Vif, Vm, VmMetrics, VmOperations, VmPowerState,
};
use crate::model::typed::{DateTime, Object, Ref, Wire};
use crate::rpc::{new_ref, void, BoxFut, Ctx, Req, R};
use crate::xenops::{
    DiskSpec, DomainSpec, MemorySpec, NicSpec, PvBoot, ShutdownRequest, VcpuSpec, XenHypervisor,
    Xenops, XenopsError,
};
use std::sync::Arc;
use std::time::Duration;

/// The reference's limit for a clean shutdown (acknowledgement and halt).
const CLEAN_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1200);

pub(super) fn xenops(ctx: &Ctx) -> R<Arc<Xenops<XenHypervisor>>> {
    ctx.xenops.get().cloned().ok_or_else(|| {
        errors::internal_error(
            "this daemon has no connection to the hypervisor (not on a Xen dom0)",
        )
    })
}

/// Claims the VM for `op` (in `current_operations`, keyed by a fresh id) after
/// `check` accepts its record; returns the record and the claim's key.
async fn claim(
    ctx: &Ctx,
    r: &Ref<Vm>,
    op: VmOperations,
    check: impl FnOnce(&Ref<Vm>, &Vm) -> R<()> + Send + 'static,
) -> R<(Vm, String)> {
    let key = new_ref();
    let (r2, k2) = (r.clone(), key.clone());
    let vm = ctx
        .db
        .transaction_async(move |tx| {
            let mut vm = get_vm(tx, &r2)?;
            if let Some((task, other)) = vm.current_operations.iter().next() {
                return Err(errors::other_operation_in_progress(
                    "VM",
                    r2.as_str(),
                    other.to_v().as_str().unwrap_or(""),
                    task,
                ));
            }
            // A device being plugged or unplugged holds the VM too.
            for b in &vm.VBDs {
                if let Some((task, other)) =
                    storage::get::<Vbd>(tx, b).and_then(|v| v.current_operations.into_iter().next())
                {
                    return Err(errors::other_operation_in_progress(
                        "VBD",
                        b.as_str(),
                        other.to_v().as_str().unwrap_or(""),
                        &task,
                    ));
                }
            }
            for v in &vm.VIFs {
                if let Some((task, other)) =
                    storage::get::<Vif>(tx, v).and_then(|v| v.current_operations.into_iter().next())
                {
                    return Err(errors::other_operation_in_progress(
                        "VIF",
                        v.as_str(),
                        other.to_v().as_str().unwrap_or(""),
                        &task,
                    ));
                }
            }
            check(&r2, &vm)?;
            vm.current_operations.insert(k2, op);
            put_vm(tx, &r2, &mut vm)?;
            Ok::<_, crate::rpc::ApiError>(vm)
        })
        .await?;
    Ok((vm, key))
}

/// Ends a claim, applying `f` to the record (the operation's outcome).
async fn release(
    ctx: &Ctx,
    r: &Ref<Vm>,
    key: &str,
    f: impl FnOnce(&mut Vm) + Send + 'static,
) -> R<()> {
    let (r, key) = (r.clone(), key.to_string());
    ctx.db
        .transaction_async(move |tx| {
            let mut vm = get_vm(tx, &r)?;
            vm.current_operations.remove(&key);
            f(&mut vm);
            put_vm(tx, &r, &mut vm)
        })
        .await
}

/// Runs `act` on the claimed record with the hypervisor; the claim is
/// released whatever happens, and the record changed by `done` only if
/// `act` succeeded. The record is checked before the hypervisor is
/// needed, so bad input gets its own error on any host.
pub(super) async fn claimed<T, Fut>(
    ctx: &Arc<Ctx>,
    r: &Ref<Vm>,
    op: VmOperations,
    check: impl FnOnce(&Ref<Vm>, &Vm) -> R<()> + Send + 'static,
    act: impl FnOnce(Arc<Xenops<XenHypervisor>>, Ref<Vm>, Vm) -> Fut,
    done: impl FnOnce(&mut Vm, &T) + Send + 'static,
) -> R<T>
where
    T: Clone + Send + 'static,
    Fut: std::future::Future<Output = R<T>>,
{
    let ctx2 = ctx.clone();
    claimed_with(
        ctx,
        r,
        op,
        check,
        move |r, vm| async move { act(xenops(&ctx2)?, r, vm).await },
        done,
    )
    .await
}

/// As [`claimed`], for an operation that may not need the hypervisor (a
/// change of a halted VM's record): `act` gets only the record.
pub(super) async fn claimed_with<T, Fut>(
    ctx: &Arc<Ctx>,
    r: &Ref<Vm>,
    op: VmOperations,
    check: impl FnOnce(&Ref<Vm>, &Vm) -> R<()> + Send + 'static,
    act: impl FnOnce(Ref<Vm>, Vm) -> Fut,
    done: impl FnOnce(&mut Vm, &T) + Send + 'static,
) -> R<T>
where
    T: Clone + Send + 'static,
    Fut: std::future::Future<Output = R<T>>,
{
    let (vm, key) = claim(ctx, r, op, check).await?;
    let res = act(r.clone(), vm).await;
    match res {
        Ok(t) => {
            let t2 = t.clone();
            release(ctx, r, &key, move |vm| done(vm, &t2)).await?;
            Ok(t)
        }
        Err(e) => {
            release(ctx, r, &key, |_| {}).await?;
            Err(e)
        }
    }
}

/// A power operation's message: [`claimed`] on the VM in the call's first
/// argument, answering void.
fn operation<T, Fut>(
    ctx: Arc<Ctx>,
    q: Req,
    op: VmOperations,
    check: impl FnOnce(&Ref<Vm>, &Vm) -> R<()> + Send + 'static,
    act: impl FnOnce(Arc<Xenops<XenHypervisor>>, Ref<Vm>, Vm) -> Fut + Send + 'static,
    done: impl FnOnce(&mut Vm, &T) + Send + 'static,
) -> BoxFut
where
    T: Clone + Send + 'static,
    Fut: std::future::Future<Output = R<T>> + Send + 'static,
{
    let r: Ref<Vm> = q.get(0);
    Box::pin(async move {
        claimed(&ctx, &r, op, check, act, done).await?;
        Ok(void())
    })
}

/// A VM's disk for a start on this host: the VBD and what the guest gets.
pub(super) type Disk = (Ref<Vbd>, DiskSpec);

/// A VM's network interface for a start: the VIF, its network, and what
/// the guest gets.
pub(super) type Nic = (Ref<Vif>, Ref<Network>, NicSpec);

/// What a VM's domain is given at start.
#[derive(Clone, Default)]
pub(super) struct Devices {
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
}

/// The VM's devices for a start on this host.
pub(super) async fn devices(ctx: &Ctx, r: &Ref<Vm>) -> R<Devices> {
    let host: Ref<Host> = Ref::new(ctx.host_ref.clone());
    let r = r.clone();
    ctx.db
        .transaction_async(move |tx| {
            Ok(Devices {
                disks: disks(tx, &r, &host)?,
                nics: nics(tx, &r, &host)?,
            })
        })
        .await
}

/// The VM's network interfaces: every VIF, its slot from `device`, its
/// bridge from its network. A VIF with no MAC gets one now, kept in its
/// record (`MAC_autogenerated`), as the reference gives one at creation.
fn nics(tx: &mut crate::db::Tx, r: &Ref<Vm>, host: &Ref<Host>) -> R<Vec<Nic>> {
    let vm = get_vm(tx, r)?;
    let mut out: Vec<Nic> = vec![];
    for v in &vm.VIFs {
        let Some(nic) = nic_of(tx, v, host)? else {
            continue;
        };
        if out.iter().any(|(_, _, n)| n.slot == nic.2.slot) {
            return Err(errors::device_already_exists(&nic.2.slot.to_string()));
        }
        out.push(nic);
    }
    Ok(out)
}

/// One VIF as the guest gets it: its slot from `device`, its bridge from
/// its network (None: no such VIF). A VIF with no MAC gets one now, kept
/// in its record (`MAC_autogenerated`), as the reference gives one at
/// creation.
pub(super) fn nic_of(tx: &mut crate::db::Tx, v: &Ref<Vif>, host: &Ref<Host>) -> R<Option<Nic>> {
    let Some(mut vif) = storage::get::<Vif>(tx, v) else {
        return Ok(None);
    };
    let slot = vif
        .device
        .parse::<u32>()
        .ok()
        .filter(|s| *s < crate::xenops::MAX_NIC_SLOTS)
        .ok_or_else(|| errors::invalid_value("device", &vif.device))?;
    let net = storage::get::<Network>(tx, &vif.network)
        .ok_or_else(|| errors::handle_invalid("network", vif.network.as_str()))?;
    if net.bridge.is_empty() {
        return Err(errors::host_cannot_attach_network(
            host.as_str(),
            vif.network.as_str(),
        ));
    }
    if vif.MAC.is_empty() {
        vif.MAC = super::random_mac();
        vif.MAC_autogenerated = true;
        tx.create(Vif::CLASS, v.as_str(), vif.to_record())?;
    }
    let mtu = match (vif.MTU, net.MTU) {
        (m, _) if m > 0 => m,
        (_, m) if m > 0 => m,
        _ => 1500,
    };
    Ok(Some((
        v.clone(),
        vif.network.clone(),
        NicSpec {
            slot,
            mac: vif.MAC.to_ascii_lowercase(),
            mtu: mtu.clamp(0, u32::MAX as i64) as u32,
            bridge: net.bridge.clone(),
        },
    )))
}

/// The VM's disks: every VBD with a VDI (an empty drive has none), its
/// slot from `userdevice`, its image from the VDI's SR. Two VBDs on one
/// slot are refused as the reference refuses them.
fn disks(tx: &mut crate::db::Tx, r: &Ref<Vm>, host: &Ref<Host>) -> R<Vec<Disk>> {
    let vm = get_vm(tx, r)?;
    let mut out: Vec<Disk> = vec![];
    for b in &vm.VBDs {
        let Some(disk) = disk_of(tx, b, host)? else {
            continue;
        };
        if out.iter().any(|(_, d)| d.slot == disk.1.slot) {
            return Err(errors::device_already_exists(&disk.1.slot.to_string()));
        }
        out.push(disk);
    }
    Ok(out)
}

/// One VBD as the guest gets it (None: no such VBD, or a drive without
/// a VDI): its slot from `userdevice`, its image from the VDI's SR.
pub(super) fn disk_of(tx: &mut crate::db::Tx, b: &Ref<Vbd>, host: &Ref<Host>) -> R<Option<Disk>> {
    let Some(vbd) = storage::get::<Vbd>(tx, b) else {
        return Ok(None);
    };
    if vbd.empty || vbd.VDI.is_null() {
        return Ok(None);
    }
    if vbd.type_ != VbdType::Disk {
        return Err(errors::operation_not_allowed(&format!(
            "VBD {b}: {} drives with media are not implemented yet",
            vbd.type_.to_v().as_str().unwrap_or("")
        )));
    }
    let slot = vbd
        .userdevice
        .parse::<u32>()
        .ok()
        .filter(|s| *s < crate::xenops::MAX_DISK_SLOTS)
        .ok_or_else(|| errors::invalid_value("userdevice", &vbd.userdevice))?;
    let vdi = storage::get::<Vdi>(tx, &vbd.VDI)
        .ok_or_else(|| errors::handle_invalid("VDI", vbd.VDI.as_str()))?;
    let path = storage::vdi_image(tx, &vbd.VDI, &vdi, host)?;
    Ok(Some((
        b.clone(),
        DiskSpec {
            slot,
            path,
            read_only: vbd.mode == VbdMode::Ro || vdi.read_only,
        },
    )))
}

/// Marks the VBDs and VIFs of a started domain attached, the VBDs with
/// their device names. (A halted VM's are marked detached with it: see
/// `put_vm`.)
pub(super) async fn note_attached(ctx: &Ctx, devices: &Devices) {
    let devices = devices.clone();
    let res = ctx
        .db
        .transaction_async(move |tx| {
            for (b, d) in &devices.disks {
                if let Some(mut vbd) = storage::get::<Vbd>(tx, b) {
                    vbd.currently_attached = true;
                    vbd.device = d.name();
                    tx.create(Vbd::CLASS, b.as_str(), vbd.to_record())?;
                }
            }
            for (v, _, _) in &devices.nics {
                if let Some(mut vif) = storage::get::<Vif>(tx, v) {
                    vif.currently_attached = true;
                    tx.create(Vif::CLASS, v.as_str(), vif.to_record())?;
                }
            }
            Ok::<_, crate::rpc::ApiError>(())
        })
        .await;
    if let Err(e) = res {
        tracing::warn!("VBDs and VIFs not marked attached: {e:?}");
    }
}

/// The domain the record describes, for a direct-kernel PV boot.
pub(super) fn spec(r: &Ref<Vm>, vm: &Vm, devices: &Devices) -> R<DomainSpec> {
    if !vm.PV_bootloader.is_empty() {
        return Err(errors::bootloader_failed(
            r.as_str(),
            &format!(
                "bootloader {:?} is not supported yet: set PV_kernel",
                vm.PV_bootloader
            ),
        ));
    }
    if vm.PV_kernel.is_empty() {
        return Err(errors::bootloader_failed(r.as_str(), "PV_kernel is empty"));
    }
    let uuid = uuid::Uuid::parse_str(&vm.uuid)
        .map_err(|_| errors::internal_error(&format!("VM uuid {:?} does not parse", vm.uuid)))?;
    let kib = |b: i64| (b.max(0) as u64) / 1024;
    Ok(DomainSpec {
        uuid,
        name: vm.name_label.clone(),
        memory: MemorySpec {
            static_max_kib: kib(vm.memory_static_max),
            target_kib: kib(vm.memory_dynamic_max),
        },
        vcpus: VcpuSpec {
            max: vm.VCPUs_max.clamp(0, u32::MAX as i64) as u32,
            at_startup: vm.VCPUs_at_startup.clamp(0, u32::MAX as i64) as u32,
        },
        boot: PvBoot {
            kernel: vm.PV_kernel.clone().into(),
            ramdisk: (!vm.PV_ramdisk.is_empty()).then(|| vm.PV_ramdisk.clone().into()),
            cmdline: vm.PV_args.clone(),
        },
        disks: devices.disks.iter().map(|(_, d)| d.clone()).collect(),
        nics: devices.nics.iter().map(|(_, _, n)| n.clone()).collect(),
    })
}

/// A failed start as the reference reports it: a bridge dom0 lacks is the
/// host's failure to attach that VIF's network.
pub(super) fn start_error(
    ctx: &Ctx,
    r: &Ref<Vm>,
    devices: &Devices,
    e: XenopsError,
) -> crate::rpc::ApiError {
    if let XenopsError::NoBridge(b) = &e {
        if let Some((_, net, _)) = devices.nics.iter().find(|(_, _, n)| n.bridge == *b) {
            return errors::host_cannot_attach_network(&ctx.host_ref, net.as_str());
        }
    }
    xen_error(r, e)
}

/// A hypervisor failure as the reference reports it.
pub(super) fn xen_error(r: &Ref<Vm>, e: XenopsError) -> crate::rpc::ApiError {
    match e {
        // The kernel or ramdisk is missing or not an image: the
        // reference's bootloader error (nothing was left running).
        XenopsError::BootFile { .. } => errors::bootloader_failed(r.as_str(), &e.to_string()),
        XenopsError::InvalidSpec(m) => errors::invalid_value("VM", &m),
        XenopsError::ShutdownNotAcknowledged { .. } => {
            errors::vm_failed_shutdown_acknowledgment(r.as_str())
        }
        XenopsError::ShutdownTimeout { timeout, .. } => {
            errors::vm_shutdown_timeout(r.as_str(), &timeout.as_secs().to_string())
        }
        e => errors::internal_error(&e.to_string()),
    }
}

pub(super) fn domid_of(vm: &Vm) -> R<u32> {
    u32::try_from(vm.domid).map_err(|_| errors::internal_error("the VM has no domain"))
}

/// Marks a VM halted: no domain, on no host.
pub(super) fn halted(vm: &mut Vm) {
    vm.power_state = VmPowerState::Halted;
    vm.domid = -1;
    vm.resident_on = Ref::null();
}

/// Records a new domain's start in the VM's metrics (best effort: the VM
/// runs either way).
fn note_started(ctx: &Ctx, r: &Ref<Vm>) {
    if let Some(vm) = ctx.db.get_typed(r) {
        let vm: Vm = vm;
        let m: Ref<VmMetrics> = vm.metrics.clone();
        let _ = ctx.db.update_typed(&m, |m| {
            m.start_time = DateTime::now();
            m.memory_actual = vm.memory_dynamic_max;
            m.VCPUs_number = vm.VCPUs_at_startup;
            m.last_updated = DateTime::now();
        });
    }
}

/// The host's free memory in bytes, as a start or resume checks it.
pub(super) async fn free_memory(ctx: &Ctx) -> R<i64> {
    let probe = ctx.probe.clone();
    tokio::task::spawn_blocking(move || probe.free_memory())
        .await
        .map_err(|e| errors::internal_error(&e.to_string()))?
        .map_err(|e| errors::internal_error(&e.to_string()))
}

pub fn start(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let (r, paused): (Ref<Vm>, bool) = (q.get(0), q.get(1));
    Box::pin(async move {
        let host: Ref<Host> = Ref::new(ctx.host_ref.clone());
        let free = free_memory(&ctx).await?;
        let check = move |r: &Ref<Vm>, vm: &Vm| {
            if vm.is_a_template {
                return Err(errors::vm_is_template(r.as_str(), "start"));
            }
            power_state_in(r, vm, &[VmPowerState::Halted])?;
            checks::memory_order(vm)?;
            checks::vcpus(vm)?;
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
            let devices = devices(&c, &r).await?;
            let spec = spec(&r, &vm, &devices)?;
            let domid = if paused {
                x.build(&spec).await
            } else {
                x.start(&spec).await
            };
            domid
                .map(|d| (d, devices.clone()))
                .map_err(|e| start_error(&c, &r, &devices, e))
        };
        let (_, devices) = claimed(
            &ctx,
            &r,
            VmOperations::Start,
            check,
            act,
            move |vm, (domid, _)| {
                vm.power_state = if paused {
                    VmPowerState::Paused
                } else {
                    VmPowerState::Running
                };
                vm.domid = i64::from(*domid);
                vm.resident_on = host;
            },
        )
        .await?;
        note_attached(&ctx, &devices).await;
        note_started(&ctx, &r);
        Ok(void())
    })
}

/// Stops the VM's domain: `clean` asks the guest first (and fails if it
/// does not acknowledge), `fallback` then destroys it anyway.
fn stop(ctx: Arc<Ctx>, q: Req, op: VmOperations, clean: bool, fallback: bool) -> BoxFut {
    // A hard shutdown also ends a suspended VM (its image goes).
    let states: &[VmPowerState] = if clean {
        stoppable(clean)
    } else {
        &[
            VmPowerState::Running,
            VmPowerState::Paused,
            VmPowerState::Suspended,
        ]
    };
    let check = move |r: &Ref<Vm>, vm: &Vm| power_state_in(r, vm, states);
    let c = ctx.clone();
    let act = move |x: Arc<Xenops<XenHypervisor>>, r: Ref<Vm>, vm: Vm| async move {
        if vm.power_state == VmPowerState::Suspended {
            return super::suspend::discard_image(&c, &vm).await;
        }
        let domid = domid_of(&vm)?;
        if clean {
            let res = x
                .clean_shutdown(domid, ShutdownRequest::Poweroff, CLEAN_SHUTDOWN_TIMEOUT)
                .await;
            if let Err(e) = res {
                if !fallback {
                    return Err(xen_error(&r, e));
                }
                tracing::info!("VM {r}: clean shutdown failed ({e}); destroying its domain");
            }
        }
        x.destroy(domid).await.map_err(|e| xen_error(&r, e))
    };
    operation(ctx, q, op, check, act, |vm, _| {
        halted(vm);
        vm.suspend_VDI = Ref::null();
    })
}

/// The states a clean operation (asking the guest) or a hard one accepts.
fn stoppable(clean: bool) -> &'static [VmPowerState] {
    if clean {
        &[VmPowerState::Running]
    } else {
        &[VmPowerState::Running, VmPowerState::Paused]
    }
}

pub fn clean_shutdown(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    stop(ctx, q, VmOperations::CleanShutdown, true, false)
}

pub fn hard_shutdown(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    stop(ctx, q, VmOperations::HardShutdown, false, false)
}

/// The reference's VM.shutdown: clean, then hard if the guest does not
/// co-operate.
pub fn shutdown(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    stop(ctx, q, VmOperations::Shutdown, true, true)
}

/// Replaces the VM's domain `old` by a fresh one built from the record,
/// running: a reboot, the guest's own (tracking) or asked for. If the new
/// domain cannot be built the old one is gone all the same, so the VM is
/// marked halted before the error is returned.
async fn rebuild(ctx: &Ctx, x: &Xenops<XenHypervisor>, r: &Ref<Vm>, vm: &Vm, old: u32) -> R<u32> {
    match x.destroy(old).await {
        Ok(()) | Err(XenopsError::NoSuchDomain(_)) => {}
        Err(e) => return Err(xen_error(r, e)),
    }
    let devices = match devices(ctx, r).await {
        Ok(d) => d,
        Err(e) => {
            update_vm(ctx, r, halted).await;
            return Err(e);
        }
    };
    let started = match spec(r, vm, &devices) {
        Ok(s) => x
            .start(&s)
            .await
            .map_err(|e| start_error(ctx, r, &devices, e)),
        Err(e) => Err(e),
    };
    if started.is_err() {
        update_vm(ctx, r, halted).await;
    } else {
        // All its devices again, as at start (one unplugged before is back).
        note_attached(ctx, &devices).await;
        note_started(ctx, r);
    }
    started
}

/// A reboot as one claimed operation: `clean` asks the guest to reboot and
/// waits for its domain to go down (as a clean shutdown does) before the
/// new domain is built; otherwise the domain is destroyed at once.
async fn reboot_claimed(
    ctx: &Arc<Ctx>,
    r: &Ref<Vm>,
    op: VmOperations,
    clean: bool,
    check: impl FnOnce(&Ref<Vm>, &Vm) -> R<()> + Send + 'static,
) -> R<u32> {
    let c = ctx.clone();
    let act = move |x: Arc<Xenops<XenHypervisor>>, r: Ref<Vm>, vm: Vm| async move {
        let domid = domid_of(&vm)?;
        if clean {
            x.clean_shutdown(domid, ShutdownRequest::Reboot, CLEAN_SHUTDOWN_TIMEOUT)
                .await
                .map_err(|e| xen_error(&r, e))?;
        }
        rebuild(&c, &x, &r, &vm, domid).await
    };
    let done = |vm: &mut Vm, domid: &u32| {
        vm.power_state = VmPowerState::Running;
        vm.domid = i64::from(*domid);
    };
    claimed(ctx, r, op, check, act, done).await
}

fn reboot(ctx: Arc<Ctx>, q: Req, op: VmOperations, clean: bool) -> BoxFut {
    let r: Ref<Vm> = q.get(0);
    Box::pin(async move {
        let check = move |r: &Ref<Vm>, vm: &Vm| power_state_in(r, vm, stoppable(clean));
        reboot_claimed(&ctx, &r, op, clean, check).await?;
        Ok(void())
    })
}

pub fn clean_reboot(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    reboot(ctx, q, VmOperations::CleanReboot, true)
}

pub fn hard_reboot(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    reboot(ctx, q, VmOperations::HardReboot, false)
}

/// A domain of the VM rebooted by itself (or its watchdog, or a crash with
/// a restart action): the same path as `VM.hard_reboot` on domain `old`,
/// claimed like it so that no client operation runs meanwhile. Nothing
/// happens if the VM has moved on to another domain since.
pub(super) async fn restart_after_guest_shutdown(ctx: &Arc<Ctx>, r: &Ref<Vm>, old: u32) -> R<u32> {
    let check = move |r: &Ref<Vm>, vm: &Vm| {
        if vm.domid != i64::from(old) {
            return Err(errors::operation_not_allowed(&format!(
                "VM {r} no longer runs as domain {old}"
            )));
        }
        Ok(())
    };
    reboot_claimed(ctx, r, VmOperations::HardReboot, false, check).await
}

fn pause_or_unpause(ctx: Arc<Ctx>, q: Req, pause: bool) -> BoxFut {
    let (op, from, to) = if pause {
        (
            VmOperations::Pause,
            VmPowerState::Running,
            VmPowerState::Paused,
        )
    } else {
        (
            VmOperations::Unpause,
            VmPowerState::Paused,
            VmPowerState::Running,
        )
    };
    let check = move |r: &Ref<Vm>, vm: &Vm| power_state_in(r, vm, &[from]);
    let act = move |x: Arc<Xenops<XenHypervisor>>, r: Ref<Vm>, vm: Vm| async move {
        let domid = domid_of(&vm)?;
        let res = if pause {
            x.pause(domid).await
        } else {
            x.unpause(domid).await
        };
        res.map_err(|e| xen_error(&r, e))
    };
    operation(ctx, q, op, check, act, move |vm, _| vm.power_state = to)
}

pub fn pause(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    pause_or_unpause(ctx, q, true)
}

pub fn unpause(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    pause_or_unpause(ctx, q, false)
}
