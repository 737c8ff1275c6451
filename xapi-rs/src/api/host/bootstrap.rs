//! The objects describing this host: pool (one-host pool, this host is
//! master), host, host_metrics and one host_cpu per physical CPU, created
//! or refreshed at start from the [`HostProbe`].

use crate::db::{Db, DbError};
use crate::generated::records::{
    DomainType, Host, HostAllowedOperations, HostCpu, HostMetrics, OnCrashBehaviour, OnNormalExit,
    Pool, Vm, VmMetrics, VmPowerState,
};
use crate::model::typed::{DateTime, Object, Ref};
use crate::model::value::V;
use crate::model::{API_VERSION_MAJOR, API_VERSION_MINOR};
use crate::rpc::{new_ref, new_uuid};
use crate::xenops::probe::{HostFacts, HostProbe};
use std::collections::BTreeMap;

pub const PRODUCT_VERSION: &str = "8.3.0";
/// The xapi API level this daemon implements, reported as software_version.xapi.
pub const XAPI_VERSION: &str = "25.6";

fn smap(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub fn software_version(f: &HostFacts) -> BTreeMap<String, String> {
    smap(&[
        ("product_version", PRODUCT_VERSION.into()),
        ("product_version_text", "8.3".into()),
        ("product_version_text_short", "8.3".into()),
        ("platform_name", "XCP".into()),
        ("platform_version", "3.4.0".into()),
        ("product_brand", "XCP-ng".into()),
        ("build_number", "xapi-rs".into()),
        ("git_id", "0".into()),
        ("hostname", f.hostname.clone()),
        ("date", "2026-01-01".into()),
        ("linux", f.linux_release.clone()),
        ("xapi", XAPI_VERSION.into()),
        ("xapi_build", XAPI_VERSION.into()),
        ("xen", f.xen_version.clone()),
        (
            "xencenter_min",
            format!("{API_VERSION_MAJOR}.{API_VERSION_MINOR}"),
        ),
        (
            "xencenter_max",
            format!("{API_VERSION_MAJOR}.{API_VERSION_MINOR}"),
        ),
        ("network_backend", "bridge".into()),
        ("db_schema", "5.786".into()),
        ("xapi-rs", env!("CARGO_PKG_VERSION").into()),
    ])
}

pub fn host_cpu_info(f: &HostFacts) -> BTreeMap<String, String> {
    smap(&[
        ("cpu_count", f.nr_cpus.to_string()),
        ("socket_count", f.socket_count.to_string()),
        ("threads_per_core", f.threads_per_core.to_string()),
        ("nr_nodes", f.nr_nodes.to_string()),
        ("vendor", f.cpu.vendor.clone()),
        ("speed", format!("{}.000", f.cpu.speed_mhz)),
        ("modelname", f.cpu.modelname.clone()),
        ("family", f.cpu.family.to_string()),
        ("model", f.cpu.model.to_string()),
        ("stepping", f.cpu.stepping.clone()),
        ("flags", f.cpu.flags.clone()),
        ("features_pv", f.features_pv.clone()),
        ("features_hvm", f.features_hvm.clone()),
        ("features_pv_host", f.features_pv_host.clone()),
        ("features_hvm_host", f.features_hvm_host.clone()),
    ])
}

pub fn pool_cpu_info(f: &HostFacts) -> BTreeMap<String, String> {
    smap(&[
        ("cpu_count", f.nr_cpus.to_string()),
        ("socket_count", f.socket_count.to_string()),
        ("vendor", f.cpu.vendor.clone()),
        ("features_pv", f.features_pv.clone()),
        ("features_hvm", f.features_hvm.clone()),
        ("features_pv_host", f.features_pv_host.clone()),
        ("features_hvm_host", f.features_hvm_host.clone()),
    ])
}

fn capabilities(f: &HostFacts) -> Vec<String> {
    let mut caps = vec!["xen-3.0-x86_64", "xen-3.0-x86_32p"];
    if f.virt_caps.iter().any(|c| c == "hvm") {
        caps.extend(["hvm-3.0-x86_32", "hvm-3.0-x86_32p", "hvm-3.0-x86_64"]);
    }
    caps.into_iter().map(String::from).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The first object of a class, or a new reference (and true).
fn first_or_new<T: Object>(db: &Db) -> (Ref<T>, bool) {
    match db.refs(T::CLASS).into_iter().next() {
        Some(r) => (Ref::new(r), false),
        None => (Ref::new(new_ref()), true),
    }
}

/// Create the object (with a fresh uuid) or apply `f` to it, writing only
/// if that changed anything.
fn put<T: Object + PartialEq + Clone + Default>(
    db: &Db,
    r: &Ref<T>,
    is_new: bool,
    f: impl FnOnce(&mut T),
) -> Result<(), DbError> {
    let old = if is_new { None } else { db.get_typed(r) };
    let mut t = old.clone().unwrap_or_default();
    f(&mut t);
    match old {
        None => {
            let mut rec = t.to_record();
            rec.insert("uuid".into(), V::S(new_uuid()));
            db.create(T::CLASS, r.as_str(), rec)?;
        }
        Some(old) if old != t => {
            db.update_typed(r, |x| *x = t)?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Create or refresh pool, host, host_metrics and host_cpus. Returns
/// (pool ref, host ref).
pub fn bootstrap(db: &Db, probe: &dyn HostProbe) -> Result<(String, String), String> {
    let f = probe.host_facts().map_err(|e| e.to_string())?;
    let e = |e: DbError| e.to_string();
    let (host, host_new) = first_or_new::<Host>(db);
    let (pool, pool_new) = first_or_new::<Pool>(db);
    let (metrics, metrics_new) = first_or_new::<HostMetrics>(db);

    put(db, &metrics, metrics_new, |m| {
        // memory_free is removed from host_metrics in the definition;
        // host.compute_free_memory answers it.
        m.memory_total = f.total_memory_bytes;
        m.live = true;
        m.last_updated = DateTime::now();
    })
    .map_err(e)?;

    // One host_cpu per physical CPU, keyed by number.
    let existing: BTreeMap<i64, Ref<HostCpu>> = db
        .all_typed::<HostCpu>()
        .into_iter()
        .map(|(r, c)| (c.number, r))
        .collect();
    let mut cpu_refs = vec![];
    for n in 0..f.nr_cpus {
        let (r, is_new) = match existing.get(&n) {
            Some(r) => (r.clone(), false),
            None => (Ref::new(new_ref()), true),
        };
        put(db, &r, is_new, |c| {
            c.host = host.clone();
            c.number = n;
            c.vendor = f.cpu.vendor.clone();
            c.speed = f.cpu.speed_mhz;
            c.modelname = f.cpu.modelname.clone();
            c.family = f.cpu.family;
            c.model = f.cpu.model;
            c.stepping = f.cpu.stepping.clone();
            c.flags = f.cpu.flags.clone();
            c.features = f.features.clone();
        })
        .map_err(e)?;
        cpu_refs.push(r);
    }
    for (n, r) in &existing {
        if *n >= f.nr_cpus {
            db.delete(HostCpu::CLASS, r.as_str()).map_err(e)?;
        }
    }

    put(db, &host, host_new, |h| {
        h.hostname = f.hostname.clone();
        h.address = f.address.clone();
        h.API_version_major = API_VERSION_MAJOR;
        h.API_version_minor = API_VERSION_MINOR;
        h.API_version_vendor = "XenSource".into();
        h.enabled = true;
        h.software_version = software_version(&f);
        h.cpu_info = host_cpu_info(&f);
        h.capabilities = capabilities(&f);
        h.metrics = metrics.clone();
        h.host_CPUs = cpu_refs;
        h.supported_bootloaders = strings(&["pygrub", "eliloader"]);
        h.allowed_operations = vec![
            HostAllowedOperations::Provision,
            HostAllowedOperations::Evacuate,
            HostAllowedOperations::Shutdown,
            HostAllowedOperations::Reboot,
            HostAllowedOperations::VmStart,
            HostAllowedOperations::VmResume,
            HostAllowedOperations::VmMigrate,
        ];
        h.edition = "xcp-ng".into();
        h.editions = strings(&["xcp-ng"]);
        h.virtual_hardware_platform_versions = vec![0, 1, 2];
        h.chipset_info = smap(&[("iommu", "false".into())]);
        if host_new {
            h.name_label = f.hostname.clone();
            h.license_server = smap(&[("address", "localhost".into()), ("port", "27000".into())]);
        }
    })
    .map_err(e)?;

    put(db, &pool, pool_new, |p| {
        p.master = host.clone();
        p.cpu_info = pool_cpu_info(&f);
        if pool_new {
            p.ha_cluster_stack = "xhad".into();
        }
    })
    .map_err(e)?;
    control_domain(db, &host, &f).map_err(e)?;
    templates(db).map_err(e)?;
    Ok((pool.as_str().to_string(), host.as_str().to_string()))
}

/// The VM record of this host's control domain (dom0), as the reference
/// keeps one: `xe vm-list` shows it, clients find the host's dom0 by it.
fn control_domain(db: &Db, host: &Ref<Host>, f: &HostFacts) -> Result<(), DbError> {
    let existing = db
        .all_typed::<Vm>()
        .into_iter()
        .find(|(_, v)| v.is_control_domain && v.resident_on == *host);
    let (r, is_new) = match existing {
        Some((r, _)) => (r, false),
        None => (Ref::new(new_ref()), true),
    };
    let metrics = match db.get_typed(&r).map(|v: Vm| v.metrics) {
        Some(m) if !m.is_null() => m,
        _ => {
            let m = Ref::<VmMetrics>::new(new_ref());
            put(db, &m, true, |x| x.VCPUs_number = f.nr_cpus)?;
            m
        }
    };
    put(db, &r, is_new, |v| {
        v.name_label = format!("Control domain on host: {}", f.hostname);
        v.name_description =
            "The domain which manages physical devices and manages other domains".into();
        v.is_control_domain = true;
        v.power_state = VmPowerState::Running;
        v.resident_on = host.clone();
        v.domid = 0;
        v.domain_type = DomainType::Pv;
        v.metrics = metrics.clone();
        v.user_version = 1;
    })
}

/// The templates this daemon installs (as the reference installs its own
/// from guest-templates-json): PV Linux by direct kernel boot (set
/// `PV_kernel`, `PV_ramdisk`, `PV_args` on the VM) and by pygrub from the
/// first disk. Created once; a user's changes to them are kept.
fn templates(db: &Db) -> Result<(), DbError> {
    let have: Vec<String> = db
        .all_typed::<Vm>()
        .into_iter()
        .filter(|(_, v)| v.is_default_template)
        .map(|(_, v)| {
            v.other_config
                .get("xapi-rs-template")
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let mib = 1024 * 1024;
    for (key, name, bootloader, disks) in [
        ("linux-pv-kernel", "Linux PV (direct kernel boot)", "", ""),
        (
            "debian-12-pv",
            "Debian Bookworm 12 (PV, pygrub)",
            "pygrub",
            r#"<provision><disk device="0" size="8589934592" sr="" bootable="true" type="system"/></provision>"#,
        ),
    ] {
        if have.iter().any(|h| h == key) {
            continue;
        }
        let r = Ref::<Vm>::new(new_ref());
        put(db, &r, true, |v| {
            v.name_label = name.into();
            v.name_description = "Installed by xapi-rs".into();
            v.is_a_template = true;
            v.is_default_template = true;
            v.power_state = VmPowerState::Halted;
            v.domain_type = DomainType::Pv;
            v.memory_static_min = 128 * mib;
            v.memory_dynamic_min = 256 * mib;
            v.memory_dynamic_max = 256 * mib;
            v.memory_static_max = 256 * mib;
            v.VCPUs_max = 1;
            v.VCPUs_at_startup = 1;
            v.actions_after_shutdown = OnNormalExit::Destroy;
            v.actions_after_reboot = OnNormalExit::Restart;
            v.actions_after_crash = OnCrashBehaviour::Restart;
            v.PV_bootloader = bootloader.into();
            v.user_version = 1;
            v.other_config = smap(&[
                ("default_template", "true".into()),
                ("xapi-rs-template", key.into()),
            ]);
            if !disks.is_empty() {
                v.other_config.insert("disks".into(), disks.into());
            }
            v.allowed_operations = crate::api::vm::checks::allowed_operations(v);
        })?;
    }
    Ok(())
}

/// Periodic refresh of host_metrics and host_cpu utilisation.
pub fn refresh_metrics(db: &Db, probe: &dyn HostProbe, host: &str) {
    if let Some(h) = db.get_typed(&Ref::<Host>::new(host)) {
        let _ = db.update_typed(&h.metrics, |m| m.last_updated = DateTime::now());
    }
    if let Ok(util) = probe.cpu_utilisation() {
        for (r, c) in db.all_typed::<HostCpu>() {
            if let Some(u) = util.get(c.number as usize) {
                if c.utilisation != *u {
                    let _ = db.update_typed(&r, |x| x.utilisation = *u);
                }
            }
        }
    }
}
