//! The objects describing this host: pool (one-host pool, this host is
//! master), host, host_metrics and one host_cpu per physical CPU, created
//! or refreshed at start from the [`HostProbe`].

use crate::api::{new_ref, new_uuid};
use crate::datamodel::{API_VERSION_MAJOR, API_VERSION_MINOR};
use crate::db::{Db, DbError};
use crate::probe::{HostFacts, HostProbe};
use crate::value::{now_datetime, Record, V};
use std::collections::BTreeMap;

pub const PRODUCT_VERSION: &str = "8.3.0";
/// The xapi API level this daemon implements, reported as software_version.xapi.
pub const XAPI_VERSION: &str = "25.6";

fn smap(pairs: &[(&str, String)]) -> V {
    V::M(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), V::S(v.clone())))
            .collect::<BTreeMap<_, _>>(),
    )
}

pub fn software_version(f: &HostFacts) -> V {
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

pub fn host_cpu_info(f: &HostFacts) -> V {
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

pub fn pool_cpu_info(f: &HostFacts) -> V {
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

fn capabilities(f: &HostFacts) -> V {
    let mut caps = vec!["xen-3.0-x86_64", "xen-3.0-x86_32p"];
    if f.virt_caps.iter().any(|c| c == "hvm") {
        caps.extend(["hvm-3.0-x86_32", "hvm-3.0-x86_32p", "hvm-3.0-x86_64"]);
    }
    V::A(caps.into_iter().map(V::str).collect())
}

fn first_or_new(db: &Db, class: &str) -> (String, bool) {
    match db.refs(class).into_iter().next() {
        Some(r) => (r, false),
        None => (new_ref(), true),
    }
}

fn put(db: &Db, class: &str, r: &str, is_new: bool, fields: Record) -> Result<(), DbError> {
    if is_new {
        let mut rec = fields;
        rec.insert("uuid".into(), V::S(new_uuid()));
        db.create(class, r, rec)?;
    } else {
        let changed = match db.get(class, r) {
            Some(old) => fields.iter().any(|(k, v)| old.get(k) != Some(v)),
            None => true,
        };
        if changed {
            db.update(class, r, |rec| rec.extend(fields))?;
        }
    }
    Ok(())
}

fn rec(pairs: Vec<(&str, V)>) -> Record {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Create or refresh pool, host, host_metrics and host_cpus. Returns
/// (pool ref, host ref).
pub fn bootstrap(db: &Db, probe: &dyn HostProbe) -> Result<(String, String), String> {
    let f = probe.host_facts().map_err(|e| e.to_string())?;
    let e = |e: DbError| e.to_string();
    let (host, host_new) = first_or_new(db, "host");
    let (pool, pool_new) = first_or_new(db, "pool");
    let (metrics, metrics_new) = first_or_new(db, "host_metrics");

    put(
        db,
        "host_metrics",
        &metrics,
        metrics_new,
        rec(vec![
            ("memory_total", V::I(f.total_memory_bytes)),
            ("memory_free", V::I(f.free_memory_bytes)),
            ("live", V::B(true)),
            ("last_updated", now_datetime()),
        ]),
    )
    .map_err(e)?;

    // One host_cpu per physical CPU, keyed by number.
    let existing: BTreeMap<i64, String> = db
        .all("host_cpu")
        .into_iter()
        .filter_map(|(r, rc)| match rc.get("number") {
            Some(V::I(n)) => Some((*n, r)),
            _ => None,
        })
        .collect();
    let mut cpu_refs = vec![];
    for n in 0..f.nr_cpus {
        let (r, is_new) = match existing.get(&n) {
            Some(r) => (r.clone(), false),
            None => (new_ref(), true),
        };
        put(
            db,
            "host_cpu",
            &r,
            is_new,
            rec(vec![
                ("host", V::S(host.clone())),
                ("number", V::I(n)),
                ("vendor", V::S(f.cpu.vendor.clone())),
                ("speed", V::I(f.cpu.speed_mhz)),
                ("modelname", V::S(f.cpu.modelname.clone())),
                ("family", V::I(f.cpu.family)),
                ("model", V::I(f.cpu.model)),
                ("stepping", V::S(f.cpu.stepping.clone())),
                ("flags", V::S(f.cpu.flags.clone())),
                ("features", V::S(f.features.clone())),
            ]),
        )
        .map_err(e)?;
        cpu_refs.push(V::S(r));
    }
    for (n, r) in &existing {
        if *n >= f.nr_cpus {
            db.delete("host_cpu", r).map_err(e)?;
        }
    }

    let mut host_fields = rec(vec![
        ("hostname", V::S(f.hostname.clone())),
        ("address", V::S(f.address.clone())),
        ("API_version_major", V::I(API_VERSION_MAJOR)),
        ("API_version_minor", V::I(API_VERSION_MINOR)),
        ("API_version_vendor", V::str("XenSource")),
        ("enabled", V::B(true)),
        ("software_version", software_version(&f)),
        ("cpu_info", host_cpu_info(&f)),
        ("capabilities", capabilities(&f)),
        ("metrics", V::S(metrics.clone())),
        ("host_CPUs", V::A(cpu_refs)),
        (
            "supported_bootloaders",
            V::A(vec![V::str("pygrub"), V::str("eliloader")]),
        ),
        (
            "allowed_operations",
            V::A(
                [
                    "provision",
                    "evacuate",
                    "shutdown",
                    "reboot",
                    "vm_start",
                    "vm_resume",
                    "vm_migrate",
                ]
                .into_iter()
                .map(V::str)
                .collect(),
            ),
        ),
        ("edition", V::str("xcp-ng")),
        ("editions", V::A(vec![V::str("xcp-ng")])),
        (
            "virtual_hardware_platform_versions",
            V::A(vec![V::I(0), V::I(1), V::I(2)]),
        ),
        ("chipset_info", smap(&[("iommu", "false".into())])),
    ]);
    if host_new {
        host_fields.insert("name_label".into(), V::S(f.hostname.clone()));
        host_fields.insert(
            "license_server".into(),
            smap(&[("address", "localhost".into()), ("port", "27000".into())]),
        );
    }
    put(db, "host", &host, host_new, host_fields).map_err(e)?;

    let mut pool_fields = rec(vec![
        ("master", V::S(host.clone())),
        ("cpu_info", pool_cpu_info(&f)),
    ]);
    if pool_new {
        pool_fields.insert("ha_cluster_stack".into(), V::str("xhad"));
    }
    put(db, "pool", &pool, pool_new, pool_fields).map_err(e)?;
    Ok((pool, host))
}

/// Periodic refresh of host_metrics and host_cpu utilisation.
pub fn refresh_metrics(db: &Db, probe: &dyn HostProbe, host: &str) {
    if let Some(m) = db.get("host", host).and_then(|h| h.get("metrics").cloned()) {
        if let (Some(m), Ok(free)) = (m.as_str(), probe.free_memory()) {
            let _ = db.update("host_metrics", m, |r| {
                r.insert("memory_free".into(), V::I(free));
                r.insert("last_updated".into(), now_datetime());
            });
        }
    }
    if let Ok(util) = probe.cpu_utilisation() {
        for (r, rc) in db.all("host_cpu") {
            let Some(V::I(n)) = rc.get("number") else {
                continue;
            };
            if let Some(u) = util.get(*n as usize) {
                if rc.get("utilisation") != Some(&V::F(*u)) {
                    let _ = db.update("host_cpu", &r, |x| {
                        x.insert("utilisation".into(), V::F(*u));
                    });
                }
            }
        }
    }
}
