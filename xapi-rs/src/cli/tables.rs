//! The `xe` field tables, generated from the datamodel.
//!
//! Every field of a class becomes a CLI field named as the reference does
//! (underscores to dashes), with its access taken from the field's type and
//! qualifier: plain fields ` ( RO)`/` ( RW)`, sets ` (SRO)`/` (SRW)`, maps
//! ` (MRO)`/` (MRW)` (RW: the datamodel generates a setter, or add_to/
//! remove_from). References are shown as the uuid of the object they name.
//!
//! Where the reference's hand-written `records.ml` differs — the order and
//! selection of fields, a few names (`host-uuid`, `suspend-image-sr-uuid`,
//! `cpu_info`), sets and maps printed as plain text, hidden, expensive and
//! deprecated fields, fields read through another object (`memory-total`
//! from the host's metrics) — a per-class [`CliClass::layout`] overrides the
//! generic table. Everything else (types, access, values) still comes from
//! the datamodel.

use crate::db::Db;
use crate::model::value::{Record, NULL_REF, V};
use crate::model::{self, Class, Field as DmField, Qual, Ty};
use xe::render::{Access, Field};

/// Show a set or map as plain text (the reference gives it no
/// `get_set`/`get_map`): ` ( RO)` / ` ( RW)`, and no `name:key` access.
pub const PLAIN: u8 = 1;
/// Never listed (param-get still reads it).
pub const HIDDEN: u8 = 2;
/// `*-list` shows `<expensive field>`.
pub const EXPENSIVE: u8 = 4;
/// ` [DEPRECATED]`.
pub const DEPRECATED: u8 = 8;
/// A map shown as the set of its values (`current-operations`).
pub const VALUES: u8 = 16;
/// Read-only from the CLI even if the datamodel has a setter.
pub const RO: u8 = 32;

/// One override entry: a datamodel field (or `ref_field.target_field`),
/// the CLI name (`""`: the generic name) and flags.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub field: &'static str,
    pub name: &'static str,
    pub flags: u8,
}

const fn e(field: &'static str, name: &'static str, flags: u8) -> Entry {
    Entry { field, name, flags }
}
const fn g(field: &'static str) -> Entry {
    Entry {
        field,
        name: "",
        flags: 0,
    }
}

/// A class as the CLI shows it.
#[derive(Debug, Clone, Copy)]
pub struct CliClass {
    /// Datamodel class.
    pub class: &'static str,
    /// CLI prefix (`host-cpu`).
    pub cli: &'static str,
    /// Default columns of `<cli>-list`.
    pub list_defaults: &'static [&'static str],
    /// The reference's record layout; empty: every datamodel field, in
    /// datamodel order, generic.
    pub layout: &'static [Entry],
}

/// The reference's `host_cpu_record`: `host` as `host-uuid`, `model` before
/// `family`, no `features`/`other-config`, `utilisation` expensive.
const HOST_CPU_LAYOUT: &[Entry] = &[
    g("uuid"),
    e("host", "host-uuid", 0),
    g("number"),
    g("vendor"),
    g("speed"),
    g("model"),
    g("family"),
    g("modelname"),
    g("stepping"),
    g("flags"),
    e("utilisation", "", EXPENSIVE),
];

const TASK_LAYOUT: &[Entry] = &[
    g("uuid"),
    g("name_label"),
    g("name_description"),
    e("subtask_of", "subtask_of", 0),
    e("subtasks", "", PLAIN),
    e("resident_on", "resident-on", 0),
    g("status"),
    g("progress"),
    g("type"),
    g("result"),
    g("created"),
    g("finished"),
    e("error_info", "error_info", PLAIN),
    e("allowed_operations", "allowed_operations", PLAIN),
    e("current_operations", "current_operations", PLAIN | VALUES),
    g("other_config"),
];

const POOL_LAYOUT: &[Entry] = &[
    g("uuid"),
    g("name_label"),
    g("name_description"),
    g("master"),
    g("default_SR"),
    g("crash_dump_SR"),
    g("suspend_image_SR"),
    g("other_config"),
    g("allowed_operations"),
    e("current_operations", "", VALUES),
    g("ha_enabled"),
    e("ha_configuration", "", PLAIN),
    e("ha_statefiles", "", PLAIN),
    g("ha_host_failures_to_tolerate"),
    g("ha_plan_exists_for"),
    g("ha_allow_overcommit"),
    g("ha_overcommitted"),
    g("ha_reboot_vm_on_internal_shutdown"),
    e("blobs", "", PLAIN),
    g("wlb_url"),
    g("wlb_username"),
    g("wlb_enabled"),
    g("wlb_verify_cert"),
    g("igmp_snooping_enabled"),
    g("gui_config"),
    g("health_check_config"),
    e("vswitch_controller", "", HIDDEN),
    e("restrictions", "", PLAIN),
    g("tags"),
    g("ha_cluster_stack"),
    g("guest_agent_config"),
    e("cpu_info", "cpu_info", 0),
    g("policy_no_vendor_device"),
    g("live_patching_disabled"),
    e("uefi_certificates", "", HIDDEN),
    e("custom_uefi_certificates", "", HIDDEN),
    g("tls_verification_enabled"),
    g("client_certificate_auth_enabled"),
    g("client_certificate_auth_name"),
    g("repositories"),
    g("repository_proxy_url"),
    g("repository_proxy_username"),
    g("migration_compression"),
    g("coordinator_bias"),
    g("telemetry_frequency"),
    g("telemetry_next_collection"),
    g("last_update_sync"),
    g("update_sync_frequency"),
    g("update_sync_day"),
    g("update_sync_enabled"),
    g("auto_update_vm_secureboot_certificates"),
    g("recommendations"),
    g("ext_auth_cache_enabled"),
    g("ext_auth_cache_size"),
    g("ext_auth_cache_expiry"),
    g("license_server"),
    g("limit_console_sessions"),
    g("vm_console_idle_timeout"),
];

const HOST_LAYOUT: &[Entry] = &[
    g("uuid"),
    g("name_label"),
    g("name_description"),
    g("allowed_operations"),
    e("current_operations", "", VALUES),
    g("enabled"),
    g("display"),
    g("API_version_major"),
    g("API_version_minor"),
    g("API_version_vendor"),
    g("API_version_vendor_implementation"),
    g("logging"),
    e("suspend_image_sr", "suspend-image-sr-uuid", 0),
    e("crash_dump_sr", "crash-dump-sr-uuid", 0),
    g("software_version"),
    g("capabilities"),
    g("other_config"),
    e("cpu_info", "cpu_info", 0),
    g("chipset_info"),
    e("hostname", "", RO),
    e("address", "", RO),
    g("https_only"),
    g("supported_bootloaders"),
    e("blobs", "", PLAIN),
    g("memory_overhead"),
    e("metrics.memory_total", "memory-total", 0),
    e("metrics.live", "host-metrics-live", 0),
    e("patches", "", DEPRECATED),
    g("updates"),
    e("ha_statefiles", "", PLAIN),
    e("ha_network_peers", "", PLAIN),
    g("external_auth_type"),
    g("external_auth_service_name"),
    g("external_auth_configuration"),
    g("edition"),
    e("license_server", "", RO),
    g("power_on_mode"),
    g("power_on_config"),
    g("local_cache_sr"),
    g("tags"),
    g("ssl_legacy"),
    e("guest_VCPUs_params", "guest_VCPUs_params", 0),
    g("virtual_hardware_platform_versions"),
    e("control_domain", "control-domain-uuid", 0),
    e("resident_VMs", "resident-vms", 0),
    g("updates_requiring_reboot"),
    g("features"),
    e("iscsi_iqn", "iscsi_iqn", 0),
    g("multipathing"),
    e("uefi_certificates", "", HIDDEN),
    g("numa_affinity_policy"),
    e("pending_guidances", "", PLAIN),
    g("tls_verification_enabled"),
    g("last_software_update"),
    g("latest_synced_updates_applied"),
    e("pending_guidances_recommended", "", PLAIN),
    e("pending_guidances_full", "", PLAIN),
    g("last_update_hash"),
    g("ssh_enabled"),
    g("ssh_enabled_timeout"),
    g("ssh_expiry"),
    g("console_idle_timeout"),
    g("ssh_auto_mode"),
    g("max_cstate"),
    g("secure_boot"),
    g("ntp_mode"),
    g("ntp_custom_servers"),
    g("timezone"),
];

/// The classes the CLI serves, with the reference's default list columns.
pub const CLI_CLASSES: &[CliClass] = &[
    CliClass {
        class: "pool",
        cli: "pool",
        list_defaults: &[
            "uuid",
            "name-label",
            "name-description",
            "master",
            "default-SR",
        ],
        layout: POOL_LAYOUT,
    },
    CliClass {
        class: "host",
        cli: "host",
        list_defaults: &["uuid", "name-label", "name-description"],
        layout: HOST_LAYOUT,
    },
    CliClass {
        class: "host_cpu",
        cli: "host-cpu",
        list_defaults: &["uuid", "number", "vendor", "speed", "utilisation"],
        layout: HOST_CPU_LAYOUT,
    },
    CliClass {
        class: "task",
        cli: "task",
        list_defaults: &[
            "uuid",
            "name-label",
            "name-description",
            "status",
            "progress",
        ],
        layout: TASK_LAYOUT,
    },
];

pub fn cli_class(prefix: &str) -> Option<&'static CliClass> {
    CLI_CLASSES.iter().find(|c| c.cli == prefix)
}

/// The reference's generic CLI name of a datamodel field.
pub fn cli_name(field: &str) -> String {
    field.replace('_', "-")
}

/// A resolved CLI field.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// The datamodel field of the class (for a read-through field: the
    /// reference field followed).
    pub field: &'static DmField,
    /// For read-through fields: the class and field read at the target.
    pub via: Option<(&'static Class, &'static DmField)>,
    pub flags: u8,
    pub access: Access,
}

impl Column {
    /// The type of the value shown.
    pub fn ty(&self) -> Ty {
        self.via.map_or(self.field.ty, |(_, f)| f.ty)
    }
    /// Whether `param-set name=` sets it (a plain RW field).
    pub fn settable(&self) -> bool {
        self.access == Access::Rw
    }
    /// Whether `name:key=` / `param-add` / `param-remove` work.
    pub fn map_writable(&self) -> bool {
        self.access == Access::MapRw
    }
    pub fn set_writable(&self) -> bool {
        self.access == Access::SetRw
    }
}

fn access_of(ty: &Ty, qual: Qual, flags: u8) -> Access {
    let rw = qual == Qual::RW && flags & RO == 0;
    let plain = flags & PLAIN != 0;
    match ty {
        Ty::Map(..) if flags & VALUES != 0 && !plain => Access::SetRo,
        Ty::Set(_) if !plain => {
            if rw {
                Access::SetRw
            } else {
                Access::SetRo
            }
        }
        Ty::Map(..) if !plain => {
            if rw {
                Access::MapRw
            } else {
                Access::MapRo
            }
        }
        _ if rw && !matches!(ty, Ty::Set(_) | Ty::Map(..)) => Access::Rw,
        _ => Access::Ro,
    }
}

/// The CLI fields of a class: its layout, or every datamodel field.
pub fn columns(cc: &CliClass) -> Vec<Column> {
    let class = model::class(cc.class).expect("CLI class in the datamodel");
    let entries: Vec<Entry> = if cc.layout.is_empty() {
        class.fields.iter().map(|f| g(f.name)).collect()
    } else {
        cc.layout.to_vec()
    };
    entries
        .iter()
        .filter_map(|en| {
            let (field, via) = match en.field.split_once('.') {
                Some((r, t)) => {
                    let field = class.field(r)?;
                    let Ty::Ref(target) = field.ty else {
                        return None;
                    };
                    let tc = model::class(target)?;
                    (field, Some((tc, tc.field(t)?)))
                }
                None => (class.field(en.field)?, None),
            };
            let name = if en.name.is_empty() {
                cli_name(en.field)
            } else {
                en.name.to_string()
            };
            let access = match via {
                Some((_, f)) => access_of(&f.ty, Qual::DynamicRO, en.flags),
                None => access_of(&field.ty, field.qual, en.flags),
            };
            Some(Column {
                name,
                field,
                via,
                flags: en.flags,
                access,
            })
        })
        .collect()
}

/// OCaml's `string_of_float`: `%.12g`, with a trailing `.` when the result
/// looks like an integer.
pub fn ocaml_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let s = format_g12(f);
    if s.contains(['.', 'e', 'n', 'i']) {
        s
    } else {
        s + "."
    }
}

/// C's `%.12g`.
fn format_g12(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let exp = f.abs().log10().floor() as i32;
    // Round first: the exponent may change.
    let sci = format!("{:.11e}", f);
    let (mant, e) = sci.split_once('e').unwrap_or((&sci, "0"));
    let e: i32 = e.parse().unwrap_or(exp);
    if !(-4..12).contains(&e) {
        let mant = trim_zeros(mant);
        let sign = if e < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", e.abs())
    } else {
        let decimals = (11 - e).max(0) as usize;
        trim_zeros(&format!("{:.*}", decimals, f))
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// The reference's `nid`: a reference that names nothing.
pub const NOT_IN_DATABASE: &str = "<not in database>";

/// The uuid of the object a reference names.
pub fn uuid_of(db: &Db, class: &str, r: &str) -> Option<String> {
    if r == NULL_REF {
        return None;
    }
    db.get(class, r)
        .and_then(|rec| rec.get("uuid").and_then(V::as_str).map(str::to_string))
}

/// A value as the CLI prints it.
pub fn text(db: &Db, ty: &Ty, v: &V) -> String {
    match (ty, v) {
        (Ty::Ref(c), v) => v
            .as_str()
            .and_then(|r| uuid_of(db, c, r))
            .unwrap_or_else(|| NOT_IN_DATABASE.to_string()),
        (Ty::Float, V::F(f)) => ocaml_float(*f),
        (Ty::Set(t), V::A(items)) => items
            .iter()
            .map(|i| text(db, t, i))
            .collect::<Vec<_>>()
            .join("; "),
        (Ty::Map(_, t), V::M(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", text(db, t, v)))
            .collect::<Vec<_>>()
            .join("; "),
        (_, v) => v.to_plain(),
    }
}

/// Renders one record of class `c` as its CLI fields.
pub fn record_fields(db: &Db, cols: &[Column], rec: &Record) -> Vec<Field> {
    cols.iter()
        .map(|col| {
            let (ty, value) = match col.via {
                Some((tc, tf)) => {
                    let target = rec
                        .get(col.field.name)
                        .and_then(V::as_str)
                        .and_then(|r| db.get(tc.name, r));
                    let v = target
                        .and_then(|t| t.get(tf.name).cloned())
                        .unwrap_or_else(|| crate::model::value::zero(&tf.ty));
                    (tf.ty, v)
                }
                None => (
                    col.field.ty,
                    rec.get(col.field.name)
                        .cloned()
                        .unwrap_or_else(|| crate::model::value::zero(&col.field.ty)),
                ),
            };
            let mut f = match (&ty, &value) {
                (Ty::Map(_, vt), V::M(m)) if col.flags & VALUES != 0 => {
                    let items: Vec<String> = m.values().map(|v| text(db, vt, v)).collect();
                    let mut f = Field::new(&col.name, items.join("; "), col.access);
                    if col.access.is_set() {
                        f.set = Some(items);
                    }
                    f
                }
                (Ty::Map(_, vt), V::M(m)) if col.access.is_map() => {
                    let pairs: Vec<(String, String)> = m
                        .iter()
                        .map(|(k, v)| (k.clone(), text(db, vt, v)))
                        .collect();
                    let mut f = Field::map(&col.name, pairs, col.access == Access::MapRw);
                    f.access = col.access;
                    f
                }
                (Ty::Set(t), V::A(items)) if col.access.is_set() => {
                    let items: Vec<String> = items.iter().map(|i| text(db, t, i)).collect();
                    Field::set(&col.name, items, col.access == Access::SetRw)
                }
                _ => Field::new(&col.name, text(db, &ty, &value), col.access),
            };
            f.hidden = col.flags & HIDDEN != 0;
            f.expensive = col.flags & EXPENSIVE != 0;
            f.deprecated = col.flags & DEPRECATED != 0;
            f
        })
        .collect()
}

/// Parses a CLI string into a value of `ty` for a setter, with the
/// reference's messages.
pub fn parse_value(db: &Db, name: &str, ty: &Ty, s: &str) -> Result<V, String> {
    match ty {
        Ty::String => Ok(V::S(s.to_string())),
        Ty::Int => s
            .trim()
            .parse::<i64>()
            .map(V::I)
            .map_err(|_| format!("Parameter {name} must be an integer")),
        Ty::Float => s
            .trim()
            .parse::<f64>()
            .map(V::F)
            .map_err(|_| format!("Parameter {name} must be a floating-point number")),
        Ty::Bool => match s {
            "true" => Ok(V::B(true)),
            "false" => Ok(V::B(false)),
            _ => Err(format!(
                "Parameter {name} must be a boolean (true or false)"
            )),
        },
        Ty::DateTime => Ok(V::D(s.to_string())),
        Ty::Enum(en) => {
            let def = model::enum_def(en).ok_or_else(|| format!("enum {en}"))?;
            def.values
                .iter()
                .find(|v| v.eq_ignore_ascii_case(s))
                .map(|v| V::S(v.to_string()))
                .ok_or_else(|| {
                    format!(
                        "Failed to parse parameter '{name}': expecting one of {}",
                        def.values.join(", ")
                    )
                })
        }
        Ty::Ref(c) => {
            if s.is_empty() {
                return Ok(V::S(NULL_REF.to_string()));
            }
            db.find_by_field(c, "uuid", s)
                .into_iter()
                .next()
                .map(V::S)
                .ok_or_else(|| format!("No {c} with uuid {s}"))
        }
        Ty::Record(_) | Ty::Option(_) | Ty::Any => Err(format!("Field '{name}' cannot be set")),
        Ty::Set(_) | Ty::Map(..) => Err(format!(
            "Field '{name}' is a map or set. use the 'name:key=value' syntax."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocaml_floats() {
        assert_eq!(ocaml_float(0.0), "0.");
        assert_eq!(ocaml_float(1.0), "1.");
        assert_eq!(ocaml_float(0.25), "0.25");
        assert_eq!(ocaml_float(0.1), "0.1");
        assert_eq!(ocaml_float(2660.0), "2660.");
        assert_eq!(ocaml_float(1e20), "1e+20");
        assert_eq!(ocaml_float(1.0 / 3.0), "0.333333333333");
    }

    #[test]
    fn generated_names_and_access() {
        let cols = columns(cli_class("pool").unwrap());
        let find = |n: &str| cols.iter().find(|c| c.name == n).unwrap().access;
        assert_eq!(find("name-label"), Access::Rw);
        assert_eq!(find("master"), Access::Ro);
        assert_eq!(find("other-config"), Access::MapRw);
        assert_eq!(find("tags"), Access::SetRw);
        assert_eq!(find("cpu_info"), Access::MapRo);
        assert_eq!(find("restrictions"), Access::Ro);
        assert_eq!(find("default-SR"), Access::Rw);
        let cpu: Vec<String> = columns(cli_class("host-cpu").unwrap())
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            cpu,
            [
                "uuid",
                "host-uuid",
                "number",
                "vendor",
                "speed",
                "model",
                "family",
                "modelname",
                "stepping",
                "flags",
                "utilisation"
            ]
        );
        // Every layout entry resolves against the datamodel.
        for cc in CLI_CLASSES {
            assert_eq!(columns(cc).len(), cc.layout.len(), "{}", cc.cli);
        }
    }
}
