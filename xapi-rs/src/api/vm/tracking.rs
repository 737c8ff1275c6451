//! Keeping VM records true to what Xen runs, with no client asking:
//! adoption when the daemon starts (a restart or kill -9 of the daemon
//! never kills, duplicates or forgets a guest) and the guests' own
//! shutdowns, reboots and crashes, handled by the VM's `actions_after_*`.

use super::power::{halted, restart_after_guest_shutdown};
use super::update_vm;
use crate::generated::records::{OnCrashBehaviour, OnNormalExit, Vm, VmPowerState};
use crate::model::typed::Ref;
use crate::rpc::Ctx;
use crate::xenops::{
    tree::Stage, DomainEvent, DomainListing, Ownership, Power, ShutdownReason, XenHypervisor,
    Xenops,
};
use std::sync::Arc;

/// What to do with a domain that shut down by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Halt,
    Restart,
    /// Leave the domain as it is (crash with `preserve`): the VM shows
    /// as paused, as the reference's does.
    Preserve,
    /// Suspends and soft resets belong to the operation that asked.
    Ignore,
}

fn action(vm: &Vm, reason: ShutdownReason) -> Action {
    let normal = |a: OnNormalExit| match a {
        OnNormalExit::Destroy => Action::Halt,
        OnNormalExit::Restart => Action::Restart,
    };
    match reason {
        ShutdownReason::Poweroff => normal(vm.actions_after_shutdown),
        // xenopsd treats the watchdog as a reboot.
        ShutdownReason::Reboot | ShutdownReason::Watchdog => normal(vm.actions_after_reboot),
        ShutdownReason::Crash => match vm.actions_after_crash {
            OnCrashBehaviour::Destroy | OnCrashBehaviour::CoredumpAndDestroy => Action::Halt,
            OnCrashBehaviour::Preserve => Action::Preserve,
            _ => Action::Restart,
        },
        _ => Action::Ignore,
    }
}

fn vm_by_uuid(ctx: &Ctx, uuid: &str) -> Option<(Ref<Vm>, Vm)> {
    ctx.db
        .all_typed::<Vm>()
        .into_iter()
        .find(|(_, v)| v.uuid == uuid)
}

/// A domain of ours shut down: apply the VM's action.
async fn on_shutdown(
    ctx: &Arc<Ctx>,
    x: &Xenops<XenHypervisor>,
    domid: u32,
    uuid: &str,
    reason: ShutdownReason,
) {
    let Some((r, vm)) = vm_by_uuid(ctx, uuid) else {
        tracing::warn!("domain {domid} ({uuid}) shut down ({reason:?}) but no VM has its uuid");
        return;
    };
    if !vm.current_operations.is_empty() || vm.domid != i64::from(domid) {
        // An operation in progress (clean shutdown, reboot...) owns it.
        return;
    }
    let act = action(&vm, reason);
    tracing::info!(
        "VM {r} ({}): domain {domid} shut down ({reason:?}): {act:?}",
        vm.name_label
    );
    match act {
        Action::Ignore => {}
        Action::Preserve => update_vm(ctx, &r, |vm| vm.power_state = VmPowerState::Paused).await,
        Action::Halt => {
            if let Err(e) = x.destroy(domid).await {
                tracing::warn!("VM {r}: destroying domain {domid}: {e}");
            }
            update_vm(ctx, &r, halted).await;
        }
        // The path of VM.hard_reboot (it marks the VM halted if the new
        // domain cannot be built).
        Action::Restart => {
            if let Err(e) = restart_after_guest_shutdown(ctx, &r, domid).await {
                tracing::warn!("VM {r}: restart after domain {domid} shut down: {e:?}");
            }
        }
    }
}

/// At start: records and domains reconciled. A VM recorded as running
/// whose domain is gone becomes halted; a running domain of ours keeps its
/// VM running (with the domid Xen gives now); a half-built one (the daemon
/// died mid-build) is destroyed; domains that are not ours are left alone.
pub async fn adopt(ctx: &Arc<Ctx>, x: &Xenops<XenHypervisor>) {
    let listing: Vec<DomainListing> = match x.list().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("adoption: cannot list domains: {e}");
            return;
        }
    };
    for l in &listing {
        if let Ownership::Ours {
            stage: Stage::Building,
        } = l.owner
        {
            tracing::info!("adoption: destroying half-built domain {}", l.state.domid);
            let _ = x.destroy(l.state.domid).await;
        }
    }
    let host = ctx.host_ref.clone();
    for (r, vm) in ctx.db.all_typed::<Vm>() {
        if vm.is_control_domain || vm.resident_on.as_str() != host {
            continue;
        }
        let dom = listing.iter().find(|l| {
            l.owner
                == (Ownership::Ours {
                    stage: Stage::Started,
                })
                && l.state.handle.to_string() == vm.uuid
        });
        match dom {
            None => {
                tracing::info!("adoption: VM {r} ({}) has no domain: halted", vm.name_label);
                update_vm(ctx, &r, halted).await;
            }
            Some(l) => {
                let (domid, power) = (l.state.domid, l.state.power);
                tracing::info!(
                    "adoption: VM {r} ({}) runs as domain {domid}",
                    vm.name_label
                );
                update_vm(ctx, &r, move |vm| {
                    vm.domid = i64::from(domid);
                    vm.current_operations.clear();
                    vm.power_state = match power {
                        Power::Paused => VmPowerState::Paused,
                        _ => VmPowerState::Running,
                    };
                })
                .await;
                if let Power::Shutdown(reason) = power {
                    on_shutdown(ctx, x, domid, &vm.uuid, reason).await;
                }
            }
        }
    }
}

/// Follows our domains for the daemon's lifetime.
pub fn spawn(ctx: Arc<Ctx>, x: Arc<Xenops<XenHypervisor>>) {
    tokio::spawn(async move {
        adopt(&ctx, &x).await;
        let mut t = match x.track().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("cannot follow domains: {e}");
                return;
            }
        };
        while let Some(ev) = t.next().await {
            match ev {
                Ok(DomainEvent::Shutdown {
                    domid,
                    uuid,
                    reason,
                }) => {
                    on_shutdown(&ctx, &x, domid, &uuid.to_string(), reason).await;
                }
                Ok(DomainEvent::Gone { domid, uuid }) => {
                    // Destroyed behind our back (xl destroy): halted, unless
                    // an operation of ours is doing it.
                    if let Some((r, vm)) = vm_by_uuid(&ctx, &uuid.to_string()) {
                        if vm.current_operations.is_empty()
                            && vm.domid == i64::from(domid)
                            && vm.power_state != VmPowerState::Halted
                        {
                            update_vm(&ctx, &r, halted).await;
                        }
                    }
                }
                Err(e) => tracing::warn!("domain tracking: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_the_vm_settings() {
        let mut vm = Vm {
            actions_after_shutdown: OnNormalExit::Destroy,
            actions_after_reboot: OnNormalExit::Restart,
            actions_after_crash: OnCrashBehaviour::Preserve,
            ..Vm::default()
        };
        assert_eq!(action(&vm, ShutdownReason::Poweroff), Action::Halt);
        assert_eq!(action(&vm, ShutdownReason::Reboot), Action::Restart);
        assert_eq!(action(&vm, ShutdownReason::Watchdog), Action::Restart);
        assert_eq!(action(&vm, ShutdownReason::Crash), Action::Preserve);
        assert_eq!(action(&vm, ShutdownReason::Suspend), Action::Ignore);
        vm.actions_after_crash = OnCrashBehaviour::CoredumpAndDestroy;
        assert_eq!(action(&vm, ShutdownReason::Crash), Action::Halt);
        vm.actions_after_shutdown = OnNormalExit::Restart;
        assert_eq!(action(&vm, ShutdownReason::Poweroff), Action::Restart);
    }
}
