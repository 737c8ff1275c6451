//! The reference's checks on a VM's configuration, as pure functions of the
//! record (unit-tested without a daemon).

use crate::generated::errors;
use crate::generated::records::{Vm, VmOperations, VmPowerState};
use crate::model::value::{Record, V};
use crate::rpc::R;

/// static_min <= dynamic_min <= dynamic_max <= static_max, else
/// `MEMORY_CONSTRAINT_VIOLATION_ORDER`. (The reference also pins the
/// dynamic range to static_max where dynamic memory control is not
/// licensed; XCP-ng, like us, has no such restriction.)
pub fn memory_order(vm: &Vm) -> R<()> {
    let ok = vm.memory_static_min <= vm.memory_dynamic_min
        && vm.memory_dynamic_min <= vm.memory_dynamic_max
        && vm.memory_dynamic_max <= vm.memory_static_max;
    if ok {
        Ok(())
    } else {
        Err(errors::memory_constraint_violation_order())
    }
}

/// At least one vCPU, and no more at start-up than the maximum.
pub fn vcpus(vm: &Vm) -> R<()> {
    if vm.VCPUs_max < 1 {
        return Err(errors::invalid_value(
            "VCPUs_max",
            &vm.VCPUs_max.to_string(),
        ));
    }
    if vm.VCPUs_at_startup < 1 {
        return Err(errors::invalid_value(
            "VCPUs_at_startup",
            &vm.VCPUs_at_startup.to_string(),
        ));
    }
    if vm.VCPUs_at_startup > vm.VCPUs_max {
        return Err(errors::value_not_supported(
            "VCPUs_at_startup",
            &vm.VCPUs_at_startup.to_string(),
            "VCPUs_at_startup must be less than or equal to VCPUs_max",
        ));
    }
    Ok(())
}

/// The operations the record's state allows, as the reference lists them
/// in `allowed_operations` (only those this daemon implements or that
/// describe a state change clients look for).
pub fn allowed_operations(vm: &Vm) -> Vec<VmOperations> {
    use VmOperations as O;
    if vm.is_control_domain {
        return vec![];
    }
    if vm.is_a_template {
        let mut ops = vec![O::Clone, O::Copy, O::Provision, O::Export];
        if !vm.is_default_template {
            ops.push(O::Destroy);
        }
        return ops;
    }
    match vm.power_state {
        VmPowerState::Halted => vec![
            O::Start,
            O::StartOn,
            O::Clone,
            O::Copy,
            O::Destroy,
            O::ChangingMemoryLimits,
            O::ChangingStaticRange,
            O::ChangingDynamicRange,
            O::ChangingVCPUs,
            O::MakeIntoTemplate,
            O::Export,
        ],
        VmPowerState::Running => vec![
            O::CleanShutdown,
            O::HardShutdown,
            O::Shutdown,
            O::CleanReboot,
            O::HardReboot,
            O::Pause,
            O::Suspend,
            O::ChangingDynamicRange,
            O::ChangingVCPUsLive,
        ],
        VmPowerState::Paused => vec![O::Unpause, O::HardShutdown, O::HardReboot],
        VmPowerState::Suspended => vec![O::Resume, O::ResumeOn, O::HardShutdown, O::Destroy],
    }
}

/// Lower-case power state, as `VM_BAD_POWER_STATE` names them.
pub fn power_state_name(p: VmPowerState) -> &'static str {
    match p {
        VmPowerState::Halted => "halted",
        VmPowerState::Paused => "paused",
        VmPowerState::Running => "running",
        VmPowerState::Suspended => "suspended",
    }
}

/// Userdevice numbers a VM may use: VBDs 0-254 (dom0 0-255), VIFs 0-6, as
/// the reference's high-water marks; minus those taken.
pub fn free_devices(control_domain: bool, vif: bool, used: &[String]) -> Vec<String> {
    let top = match (vif, control_domain) {
        (true, _) => 6,
        (false, true) => 255,
        (false, false) => 254,
    };
    (0..=top)
        .map(|n: u32| n.to_string())
        .filter(|d| !used.iter().any(|u| u == d))
        .collect()
}

/// The device slots a VM's VBDs (`vif`: its VIFs) leave free, from its
/// record `vm` and `get` reading a VBD or VIF record by class and
/// reference: what `VM.get_allowed_VBD_devices`/`get_allowed_VIF_devices`
/// answer and `xe` shows as `allowed-VBD-devices`/`allowed-VIF-devices`.
pub fn allowed_devices(
    vm: &Record,
    vif: bool,
    get: impl Fn(&str, &str) -> Option<Record>,
) -> Vec<String> {
    let (set, class, key) = if vif {
        ("VIFs", "VIF", "device")
    } else {
        ("VBDs", "VBD", "userdevice")
    };
    let used: Vec<String> = match vm.get(set) {
        Some(V::A(refs)) => refs
            .iter()
            .filter_map(V::as_str)
            .filter_map(|r| get(class, r))
            .filter_map(|d| d.get(key).and_then(V::as_str).map(str::to_string))
            .collect(),
        _ => vec![],
    };
    let control = vm.get("is_control_domain") == Some(&V::B(true));
    free_devices(control, vif, &used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(smin: i64, dmin: i64, dmax: i64, smax: i64) -> Vm {
        Vm {
            memory_static_min: smin,
            memory_dynamic_min: dmin,
            memory_dynamic_max: dmax,
            memory_static_max: smax,
            VCPUs_max: 1,
            VCPUs_at_startup: 1,
            ..Vm::default()
        }
    }

    #[test]
    fn memory_must_be_in_order() {
        assert!(memory_order(&vm(1, 2, 3, 4)).is_ok());
        assert!(memory_order(&vm(4, 4, 4, 4)).is_ok());
        for bad in [vm(2, 1, 3, 4), vm(1, 3, 2, 4), vm(1, 2, 4, 3)] {
            let e = memory_order(&bad).unwrap_err();
            assert_eq!(e.0, vec!["MEMORY_CONSTRAINT_VIOLATION_ORDER".to_string()]);
        }
    }

    #[test]
    fn vcpus_need_one_and_startup_within_max() {
        let mut v = vm(1, 1, 1, 1);
        assert!(vcpus(&v).is_ok());
        v.VCPUs_max = 0;
        assert_eq!(
            vcpus(&v).unwrap_err().0,
            ["INVALID_VALUE", "VCPUs_max", "0"]
        );
        v.VCPUs_max = 2;
        v.VCPUs_at_startup = 3;
        assert_eq!(
            vcpus(&v).unwrap_err().0[..3],
            ["VALUE_NOT_SUPPORTED", "VCPUs_at_startup", "3"]
        );
    }

    #[test]
    fn free_devices_skip_used_ones() {
        let used = vec!["0".to_string(), "2".to_string()];
        assert_eq!(free_devices(false, true, &used), ["1", "3", "4", "5", "6"]);
        assert_eq!(free_devices(false, false, &[]).len(), 255);
        assert_eq!(free_devices(true, false, &[]).len(), 256);
    }

    #[test]
    fn templates_and_states_allow_what_the_reference_does() {
        let mut v = vm(1, 1, 1, 1);
        assert!(allowed_operations(&v).contains(&VmOperations::Start));
        v.power_state = VmPowerState::Running;
        let ops = allowed_operations(&v);
        assert!(ops.contains(&VmOperations::CleanShutdown) && !ops.contains(&VmOperations::Start));
        v.is_a_template = true;
        v.is_default_template = true;
        let ops = allowed_operations(&v);
        assert!(ops.contains(&VmOperations::Clone) && !ops.contains(&VmOperations::Destroy));
    }
}
