//! The declarative XenAPI datamodel: the single source of truth.
//!
//! Classes, fields (with type, qualifier and default), enums, custom messages
//! and error codes are declared here as constant tables. Everything generic —
//! dispatch of `get_record`/`get_all*`/`get_FIELD`/`set_FIELD`/`add_to_`/
//! `remove_from_`, `system.listMethods`, the database tables, default values,
//! wire typing and event snapshots — is derived from these tables.
//!
//! Field names, types and enum spellings follow the reference datamodel
//! (xapi-project/xen-api, `ocaml/idl/datamodel*.ml`).

/// API version announced by `host.API_version_major/minor`.
pub const API_VERSION_MAJOR: i64 = 2;
pub const API_VERSION_MINOR: i64 = 21;

/// A field or parameter type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    String,
    Int,
    Float,
    Bool,
    DateTime,
    /// Reference to an object of the named class.
    Ref(&'static str),
    /// Value of the named enum.
    Enum(&'static str),
    Set(&'static Ty),
    Map(&'static Ty, &'static Ty),
}

/// Access qualifier of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qual {
    /// Read-only: only a getter.
    RO,
    /// Read-write: getter and setter (and add_to/remove_from for maps and sets).
    RW,
}

/// Default value of a field when no real data backs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Def {
    /// The zero value of the type (empty string/set/map, 0, false, epoch,
    /// `OpaqueRef:NULL`, first enum value).
    Auto,
    Str(&'static str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub qual: Qual,
    pub default: Def,
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub ty: Ty,
}

/// A hand-implemented (non-generic) message of a class.
#[derive(Debug, Clone, Copy)]
pub struct Message {
    pub name: &'static str,
    /// Parameters after the session (or all of them if `session` is false).
    pub params: &'static [Param],
    /// Number of trailing parameters that may be omitted.
    pub optional: usize,
    pub result: Option<Ty>,
    /// Whether the first parameter is a session reference.
    pub session: bool,
    /// Whether an `Async.` variant exists.
    pub asynchronous: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Class {
    pub name: &'static str,
    pub description: &'static str,
    pub fields: &'static [Field],
    pub messages: &'static [Message],
    /// Stored in the persistent database (sessions and tasks are not).
    pub persistent: bool,
    /// Whether the generic record/field messages exist (false for `event`).
    pub has_records: bool,
    /// Whether `get_all`, `get_all_where`, `get_all_records` and
    /// `get_all_records_where` exist (the reference's
    /// `expose_get_all_messages_for`; not for `session`).
    pub expose_get_all: bool,
    /// Whether changes are reported by the event messages (`gen_events`).
    pub gen_events: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct EnumDef {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

/// An error code and the names of its parameters.
#[derive(Debug, Clone, Copy)]
pub struct ErrorDef {
    pub code: &'static str,
    pub params: &'static [&'static str],
    /// The reference's description (`err_doc`), printed by the CLI; empty
    /// for codes the reference does not declare.
    pub doc: &'static str,
}

impl Class {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
    pub fn message(&self, name: &str) -> Option<&'static Message> {
        self.messages.iter().find(|m| m.name == name)
    }
    pub fn is_named(&self) -> bool {
        self.field("name_label").is_some()
    }
}

pub fn class(name: &str) -> Option<&'static Class> {
    CLASSES
        .iter()
        .find(|c| c.name == name)
        .or_else(|| CLASSES.iter().find(|c| c.name.eq_ignore_ascii_case(name)))
}

pub fn error_def(code: &str) -> Option<&'static ErrorDef> {
    ERRORS.iter().find(|e| e.code == code)
}

pub fn enum_def(name: &str) -> Option<&'static EnumDef> {
    ENUMS.iter().find(|e| e.name == name)
}

// ---------------------------------------------------------------------------
// Table-building helpers (const, so the whole model is static data).

const S: Ty = Ty::String;
const I: Ty = Ty::Int;
const F: Ty = Ty::Float;
const B: Ty = Ty::Bool;
const D: Ty = Ty::DateTime;
const SMAP: Ty = Ty::Map(&Ty::String, &Ty::String);
const SSET: Ty = Ty::Set(&Ty::String);
use Qual::{RO, RW};

const fn f(name: &'static str, ty: Ty, qual: Qual) -> Field {
    Field {
        name,
        ty,
        qual,
        default: Def::Auto,
    }
}
const fn fd(name: &'static str, ty: Ty, qual: Qual, default: Def) -> Field {
    Field {
        name,
        ty,
        qual,
        default,
    }
}
const fn p(name: &'static str, ty: Ty) -> Param {
    Param { name, ty }
}
const fn m(name: &'static str, params: &'static [Param], result: Option<Ty>) -> Message {
    Message {
        name,
        params,
        optional: 0,
        result,
        session: true,
        asynchronous: false,
    }
}
const fn am(name: &'static str, params: &'static [Param], result: Option<Ty>) -> Message {
    Message {
        name,
        params,
        optional: 0,
        result,
        session: true,
        asynchronous: true,
    }
}

// ---------------------------------------------------------------------------
// Enums

pub const ENUMS: &[EnumDef] = &[
    EnumDef {
        name: "task_status_type",
        values: &["pending", "success", "failure", "cancelling", "cancelled"],
    },
    EnumDef {
        name: "task_allowed_operations",
        values: &["cancel", "destroy"],
    },
    EnumDef {
        name: "host_allowed_operations",
        values: &[
            "provision",
            "evacuate",
            "shutdown",
            "reboot",
            "power_on",
            "vm_start",
            "vm_resume",
            "vm_migrate",
            "apply_updates",
            "enable",
        ],
    },
    EnumDef {
        name: "pool_allowed_operations",
        values: &[
            "ha_enable",
            "ha_disable",
            "cluster_create",
            "designate_new_master",
            "configure_repositories",
            "sync_updates",
            "sync_bundle",
            "get_updates",
            "apply_updates",
            "tls_verification_enable",
            "cert_refresh",
            "exchange_certificates_on_join",
            "exchange_ca_certificates_on_join",
            "copy_primary_host_certs",
            "eject",
        ],
    },
    EnumDef {
        name: "host_display",
        values: &[
            "enabled",
            "disable_on_reboot",
            "disabled",
            "enable_on_reboot",
        ],
    },
    EnumDef {
        name: "update_guidances",
        values: &[
            "reboot_host",
            "reboot_host_on_livepatch_failure",
            "reboot_host_on_kernel_livepatch_failure",
            "reboot_host_on_xen_livepatch_failure",
            "restart_toolstack",
            "restart_device_model",
            "restart_vm",
        ],
    },
    EnumDef {
        name: "latest_synced_updates_applied_state",
        values: &["yes", "no", "unknown"],
    },
    EnumDef {
        name: "host_numa_affinity_policy",
        values: &["any", "best_effort", "default_policy"],
    },
    EnumDef {
        name: "host_ntp_mode",
        values: &["DHCP", "Custom", "Factory", "Disabled"],
    },
    EnumDef {
        name: "host_sched_gran",
        values: &["core", "cpu", "socket"],
    },
    EnumDef {
        name: "telemetry_frequency",
        values: &["daily", "weekly", "monthly"],
    },
    EnumDef {
        name: "update_sync_frequency",
        values: &["daily", "weekly"],
    },
];

// ---------------------------------------------------------------------------
// Errors used by this daemon (code and parameter names).

pub const ERRORS: &[ErrorDef] = &[
    ErrorDef {
        code: "MESSAGE_METHOD_UNKNOWN",
        params: &["method"],
        doc: "You tried to call a method that does not exist. The method name that you used is echoed.",
    },
    ErrorDef {
        code: "MESSAGE_PARAMETER_COUNT_MISMATCH",
        params: &["method", "expected", "received"],
        doc: "You tried to call a method with the incorrect number of parameters. The fully-qualified method name that you used, and the number of received and expected parameters are returned.",
    },
    ErrorDef {
        code: "HANDLE_INVALID",
        params: &["class", "handle"],
        doc: "You gave an invalid object reference. The object may have recently been deleted. The class parameter gives the type of reference given, and the handle parameter echoes the bad value given.",
    },
    ErrorDef {
        code: "UUID_INVALID",
        params: &["type", "uuid"],
        doc: "The uuid you supplied was invalid.",
    },
    ErrorDef {
        code: "SESSION_INVALID",
        params: &["handle"],
        doc: "You gave an invalid session reference. It may have been invalidated by a server restart, or timed out. You should get a new session handle, using one of the session.login_ calls. This error does not invalidate the current connection. The handle parameter echoes the bad value given.",
    },
    ErrorDef {
        code: "SESSION_AUTHENTICATION_FAILED",
        params: &["uname", "msg"],
        doc: "The credentials given by the user are incorrect, so access has been denied, and you have not been issued a session handle.",
    },
    ErrorDef {
        code: "SESSION_NOT_REGISTERED",
        params: &["handle"],
        doc: "This session is not registered to receive events. You must call event.register before event.next. The session handle you are using is echoed.",
    },
    ErrorDef {
        code: "FIELD_TYPE_ERROR",
        params: &["field"],
        doc: "The value specified is of the wrong type",
    },
    ErrorDef {
        code: "MAP_DUPLICATE_KEY",
        params: &["type", "param_name", "uuid", "key"],
        doc: "You tried to add a key-value pair to a map, but that key is already there.",
    },
    ErrorDef {
        code: "INVALID_VALUE",
        params: &["field", "value"],
        doc: "The value given is invalid",
    },
    ErrorDef {
        code: "EVENTS_LOST",
        params: &[],
        doc: "Some events have been lost from the queue and cannot be retrieved.",
    },
    ErrorDef {
        code: "OPERATION_NOT_ALLOWED",
        params: &["reason"],
        doc: "You attempted an operation that was not allowed.",
    },
    ErrorDef {
        code: "INTERNAL_ERROR",
        params: &["message"],
        doc: "The server failed to handle your request, due to an internal error. The given message may give details useful for debugging the problem.",
    },
    ErrorDef {
        code: "XMLRPC_UNMARSHAL_FAILURE",
        params: &["expected", "received"],
        doc: "The server failed to unmarshal the XMLRPC message; it was expecting one element and received something else.",
    },
    ErrorDef {
        code: "JSONRPC_UNMARSHAL_FAILURE",
        params: &["message"],
        doc: "",
    },
    ErrorDef {
        code: "EVENT_FROM_TOKEN_PARSE_FAILURE",
        params: &["token"],
        doc: "The event.from token could not be parsed. Valid values include: '', and a value returned from a previous event.from call.",
    },
    ErrorDef {
        code: "REQUEST_TOO_LARGE",
        params: &[],
        doc: "",
    },
    ErrorDef {
        code: "TASK_CANCELLED",
        params: &["task"],
        doc: "The request was asynchronously canceled.",
    },
    ErrorDef {
        code: "HOST_IS_SLAVE",
        params: &["Master IP address"],
        doc: "You cannot make regular API calls directly on a supporter. Please pass API calls via the coordinator host.",
    },
];

// ---------------------------------------------------------------------------
// Classes

const SESSION_FIELDS: &[Field] = &[
    f("uuid", S, RO),
    f("this_host", Ty::Ref("host"), RO),
    f("this_user", Ty::Ref("user"), RO),
    f("last_active", D, RO),
    fd("pool", B, RO, Def::Bool(false)),
    f("other_config", SMAP, RW),
    f("is_local_superuser", B, RO),
    f("subject", Ty::Ref("subject"), RO),
    f("validation_time", D, RO),
    f("auth_user_sid", S, RO),
    f("auth_user_name", S, RO),
    f("rbac_permissions", SSET, RO),
    f("tasks", Ty::Set(&Ty::Ref("task")), RO),
    f("parent", Ty::Ref("session"), RO),
    f("originator", S, RO),
    f("client_certificate", B, RO),
];

const SESSION_MESSAGES: &[Message] = &[
    Message {
        name: "login_with_password",
        params: &[
            p("uname", S),
            p("pwd", S),
            p("version", S),
            p("originator", S),
        ],
        optional: 2,
        result: Some(Ty::Ref("session")),
        session: false,
        asynchronous: false,
    },
    m("logout", &[], None),
    m("local_logout", &[], None),
    m(
        "get_this_host",
        &[p("self", Ty::Ref("session"))],
        Some(Ty::Ref("host")),
    ),
    m(
        "get_this_user",
        &[p("self", Ty::Ref("session"))],
        Some(Ty::Ref("user")),
    ),
    m("get_all_subject_identifiers", &[], Some(SSET)),
];

const POOL_FIELDS: &[Field] = &[
    f("uuid", S, RO),
    f("name_label", S, RW),
    f("name_description", S, RW),
    f("master", Ty::Ref("host"), RO),
    f("default_SR", Ty::Ref("SR"), RW),
    f("suspend_image_SR", Ty::Ref("SR"), RW),
    f("crash_dump_SR", Ty::Ref("SR"), RW),
    f("other_config", SMAP, RW),
    f("ha_enabled", B, RO),
    f("ha_configuration", SMAP, RO),
    f("ha_statefiles", SSET, RO),
    f("ha_host_failures_to_tolerate", I, RO),
    f("ha_plan_exists_for", I, RO),
    f("ha_allow_overcommit", B, RW),
    f("ha_overcommitted", B, RO),
    f("blobs", Ty::Map(&Ty::String, &Ty::Ref("blob")), RO),
    f("tags", SSET, RW),
    f("gui_config", SMAP, RW),
    f("health_check_config", SMAP, RW),
    f("wlb_url", S, RO),
    f("wlb_username", S, RO),
    f("wlb_enabled", B, RW),
    f("wlb_verify_cert", B, RW),
    f("redo_log_enabled", B, RO),
    f("redo_log_vdi", Ty::Ref("VDI"), RO),
    f("vswitch_controller", S, RO),
    f("restrictions", SMAP, RO),
    f("metadata_VDIs", Ty::Set(&Ty::Ref("VDI")), RO),
    f("ha_cluster_stack", S, RO),
    f(
        "allowed_operations",
        Ty::Set(&Ty::Enum("pool_allowed_operations")),
        RO,
    ),
    f(
        "current_operations",
        Ty::Map(&Ty::String, &Ty::Enum("pool_allowed_operations")),
        RO,
    ),
    f("guest_agent_config", SMAP, RO),
    f("cpu_info", SMAP, RO),
    f("policy_no_vendor_device", B, RW),
    f("live_patching_disabled", B, RW),
    f("igmp_snooping_enabled", B, RO),
    f("uefi_certificates", S, RO),
    f("custom_uefi_certificates", S, RO),
    f("is_psr_pending", B, RW),
    f("tls_verification_enabled", B, RO),
    f("repositories", Ty::Set(&Ty::Ref("Repository")), RO),
    f("client_certificate_auth_enabled", B, RO),
    f("client_certificate_auth_name", S, RO),
    f("repository_proxy_url", S, RO),
    f("repository_proxy_username", S, RO),
    f("repository_proxy_password", Ty::Ref("secret"), RO),
    fd("migration_compression", B, RW, Def::Bool(false)),
    fd("coordinator_bias", B, RW, Def::Bool(true)),
    f("telemetry_uuid", Ty::Ref("secret"), RO),
    fd(
        "telemetry_frequency",
        Ty::Enum("telemetry_frequency"),
        RO,
        Def::Str("weekly"),
    ),
    f("telemetry_next_collection", D, RO),
    f("last_update_sync", D, RO),
    fd(
        "update_sync_frequency",
        Ty::Enum("update_sync_frequency"),
        RO,
        Def::Str("weekly"),
    ),
    f("update_sync_day", I, RO),
    f("update_sync_enabled", B, RO),
    f("recommendations", SMAP, RO),
    f("license_server", SMAP, RW),
    fd("ha_reboot_vm_on_internal_shutdown", B, RO, Def::Bool(true)),
    fd("ext_auth_max_threads", I, RO, Def::Int(1)),
    fd("local_auth_max_threads", I, RO, Def::Int(8)),
    f("ext_auth_cache_enabled", B, RO),
    fd("ext_auth_cache_size", I, RO, Def::Int(50)),
    fd("ext_auth_cache_expiry", I, RO, Def::Int(300)),
    f("limit_console_sessions", B, RW),
    f("vm_console_idle_timeout", I, RW),
    f("auto_update_vm_secureboot_certificates", B, RW),
];

const HOST_FIELDS: &[Field] = &[
    f("uuid", S, RO),
    f("name_label", S, RW),
    f("name_description", S, RW),
    f("memory_overhead", I, RO),
    f(
        "allowed_operations",
        Ty::Set(&Ty::Enum("host_allowed_operations")),
        RO,
    ),
    f(
        "current_operations",
        Ty::Map(&Ty::String, &Ty::Enum("host_allowed_operations")),
        RO,
    ),
    fd("API_version_major", I, RO, Def::Int(API_VERSION_MAJOR)),
    fd("API_version_minor", I, RO, Def::Int(API_VERSION_MINOR)),
    fd("API_version_vendor", S, RO, Def::Str("XenSource")),
    f("API_version_vendor_implementation", SMAP, RO),
    fd("enabled", B, RO, Def::Bool(true)),
    f("software_version", SMAP, RO),
    f("other_config", SMAP, RW),
    f("capabilities", SSET, RO),
    f("cpu_configuration", SMAP, RO),
    fd("sched_policy", S, RO, Def::Str("credit")),
    f("supported_bootloaders", SSET, RO),
    f("resident_VMs", Ty::Set(&Ty::Ref("VM")), RO),
    f("logging", SMAP, RW),
    f("PIFs", Ty::Set(&Ty::Ref("PIF")), RO),
    f("suspend_image_sr", Ty::Ref("SR"), RW),
    f("crash_dump_sr", Ty::Ref("SR"), RW),
    f("crashdumps", Ty::Set(&Ty::Ref("host_crashdump")), RO),
    f("patches", Ty::Set(&Ty::Ref("host_patch")), RO),
    f("updates", Ty::Set(&Ty::Ref("pool_update")), RO),
    f("PBDs", Ty::Set(&Ty::Ref("PBD")), RO),
    f("host_CPUs", Ty::Set(&Ty::Ref("host_cpu")), RO),
    f("cpu_info", SMAP, RO),
    f("hostname", S, RW),
    f("address", S, RW),
    f("metrics", Ty::Ref("host_metrics"), RO),
    f("license_params", SMAP, RO),
    f("ha_statefiles", SSET, RO),
    f("ha_network_peers", SSET, RO),
    f("blobs", Ty::Map(&Ty::String, &Ty::Ref("blob")), RO),
    f("tags", SSET, RW),
    f("external_auth_type", S, RO),
    f("external_auth_service_name", S, RO),
    f("external_auth_configuration", SMAP, RO),
    f("edition", S, RO),
    f("license_server", SMAP, RW),
    f("bios_strings", SMAP, RO),
    f("power_on_mode", S, RO),
    f("power_on_config", SMAP, RO),
    f("local_cache_sr", Ty::Ref("SR"), RO),
    f("chipset_info", SMAP, RO),
    f("PCIs", Ty::Set(&Ty::Ref("PCI")), RO),
    f("PGPUs", Ty::Set(&Ty::Ref("PGPU")), RO),
    f("PUSBs", Ty::Set(&Ty::Ref("PUSB")), RO),
    f("ssl_legacy", B, RO),
    f("guest_VCPUs_params", SMAP, RW),
    fd("display", Ty::Enum("host_display"), RW, Def::Str("enabled")),
    f("virtual_hardware_platform_versions", Ty::Set(&Ty::Int), RO),
    f("control_domain", Ty::Ref("VM"), RO),
    f(
        "updates_requiring_reboot",
        Ty::Set(&Ty::Ref("pool_update")),
        RO,
    ),
    f("features", Ty::Set(&Ty::Ref("Feature")), RO),
    f("iscsi_iqn", S, RO),
    f("multipathing", B, RO),
    f("uefi_certificates", S, RO),
    f("certificates", Ty::Set(&Ty::Ref("Certificate")), RO),
    f("editions", SSET, RO),
    f(
        "pending_guidances",
        Ty::Set(&Ty::Enum("update_guidances")),
        RO,
    ),
    f("tls_verification_enabled", B, RO),
    f("last_software_update", D, RO),
    fd("https_only", B, RO, Def::Bool(false)),
    fd(
        "latest_synced_updates_applied",
        Ty::Enum("latest_synced_updates_applied_state"),
        RO,
        Def::Str("unknown"),
    ),
    fd(
        "numa_affinity_policy",
        Ty::Enum("host_numa_affinity_policy"),
        RO,
        Def::Str("default_policy"),
    ),
    f(
        "pending_guidances_recommended",
        Ty::Set(&Ty::Enum("update_guidances")),
        RO,
    ),
    f(
        "pending_guidances_full",
        Ty::Set(&Ty::Enum("update_guidances")),
        RO,
    ),
    f("last_update_hash", S, RO),
    fd("ssh_enabled", B, RO, Def::Bool(true)),
    f("ssh_enabled_timeout", I, RO),
    f("ssh_expiry", D, RO),
    f("console_idle_timeout", I, RO),
    f("ssh_auto_mode", B, RO),
    f("max_cstate", S, RO),
    f("secure_boot", B, RO),
    fd(
        "ntp_mode",
        Ty::Enum("host_ntp_mode"),
        RO,
        Def::Str("Factory"),
    ),
    f("ntp_custom_servers", SSET, RO),
    fd("timezone", S, RO, Def::Str("UTC")),
];

const HOST_MESSAGES: &[Message] = &[
    m("get_servertime", &[p("host", Ty::Ref("host"))], Some(D)),
    m(
        "get_server_localtime",
        &[p("host", Ty::Ref("host"))],
        Some(D),
    ),
    am(
        "get_server_certificate",
        &[p("host", Ty::Ref("host"))],
        Some(S),
    ),
    am(
        "compute_free_memory",
        &[p("host", Ty::Ref("host"))],
        Some(I),
    ),
    m("get_cpu_features", &[p("host", Ty::Ref("host"))], Some(S)),
    m(
        "set_https_only",
        &[p("self", Ty::Ref("host")), p("value", B)],
        None,
    ),
];

const POOL_MESSAGES: &[Message] = &[];

const HOST_METRICS_FIELDS: &[Field] = &[
    f("uuid", S, RO),
    f("memory_total", I, RO),
    f("memory_free", I, RO),
    fd("live", B, RO, Def::Bool(true)),
    f("last_updated", D, RO),
    f("other_config", SMAP, RW),
];

const HOST_CPU_FIELDS: &[Field] = &[
    f("uuid", S, RO),
    f("host", Ty::Ref("host"), RO),
    f("number", I, RO),
    f("vendor", S, RO),
    f("speed", I, RO),
    f("modelname", S, RO),
    f("family", I, RO),
    f("model", I, RO),
    f("stepping", S, RO),
    f("flags", S, RO),
    f("features", S, RO),
    f("utilisation", F, RO),
    f("other_config", SMAP, RW),
];

const TASK_FIELDS: &[Field] = &[
    f("uuid", S, RO),
    f("name_label", S, RO),
    f("name_description", S, RO),
    f(
        "allowed_operations",
        Ty::Set(&Ty::Enum("task_allowed_operations")),
        RO,
    ),
    f(
        "current_operations",
        Ty::Map(&Ty::String, &Ty::Enum("task_allowed_operations")),
        RO,
    ),
    f("created", D, RO),
    f("finished", D, RO),
    f("status", Ty::Enum("task_status_type"), RO),
    f("resident_on", Ty::Ref("host"), RO),
    f("progress", F, RO),
    f("type", S, RO),
    f("result", S, RO),
    f("error_info", SSET, RO),
    f("other_config", SMAP, RW),
    f("subtask_of", Ty::Ref("task"), RO),
    f("subtasks", Ty::Set(&Ty::Ref("task")), RO),
    f("backtrace", S, RO),
];

const TASK_MESSAGES: &[Message] = &[
    m(
        "create",
        &[p("label", S), p("description", S)],
        Some(Ty::Ref("task")),
    ),
    m("destroy", &[p("self", Ty::Ref("task"))], None),
    am("cancel", &[p("task", Ty::Ref("task"))], None),
    m(
        "set_status",
        &[
            p("self", Ty::Ref("task")),
            p("value", Ty::Enum("task_status_type")),
        ],
        None,
    ),
    m(
        "set_progress",
        &[p("self", Ty::Ref("task")), p("value", F)],
        None,
    ),
    m(
        "set_result",
        &[p("self", Ty::Ref("task")), p("value", S)],
        None,
    ),
    m(
        "set_error_info",
        &[p("self", Ty::Ref("task")), p("value", SSET)],
        None,
    ),
];

const EVENT_MESSAGES: &[Message] = &[
    m("register", &[p("classes", SSET)], None),
    m("unregister", &[p("classes", SSET)], None),
    m("next", &[], Some(Ty::Set(&SMAP))),
    m(
        "from",
        &[p("classes", SSET), p("token", S), p("timeout", F)],
        Some(SMAP),
    ),
    m("get_current_id", &[], Some(I)),
    m("inject", &[p("class", S), p("ref", S)], Some(S)),
];

pub const CLASSES: &[Class] = &[
    Class {
        name: "session",
        description: "A session",
        fields: SESSION_FIELDS,
        messages: SESSION_MESSAGES,
        persistent: false,
        expose_get_all: false,
        gen_events: false,
        has_records: true,
    },
    Class {
        name: "pool",
        description: "Pool-wide information",
        fields: POOL_FIELDS,
        messages: POOL_MESSAGES,
        persistent: true,
        expose_get_all: true,
        gen_events: true,
        has_records: true,
    },
    Class {
        name: "host",
        description: "A physical host",
        fields: HOST_FIELDS,
        messages: HOST_MESSAGES,
        persistent: true,
        expose_get_all: true,
        gen_events: true,
        has_records: true,
    },
    Class {
        name: "host_metrics",
        description: "The metrics associated with a host",
        fields: HOST_METRICS_FIELDS,
        messages: &[],
        persistent: true,
        expose_get_all: true,
        gen_events: true,
        has_records: true,
    },
    Class {
        name: "host_cpu",
        description: "A physical CPU",
        fields: HOST_CPU_FIELDS,
        messages: &[],
        persistent: true,
        expose_get_all: true,
        gen_events: true,
        has_records: true,
    },
    Class {
        name: "task",
        description: "A long-running asynchronous task",
        fields: TASK_FIELDS,
        messages: TASK_MESSAGES,
        persistent: false,
        expose_get_all: true,
        gen_events: true,
        has_records: true,
    },
    Class {
        name: "event",
        description: "Asynchronous event registration and handling",
        fields: &[],
        messages: EVENT_MESSAGES,
        persistent: false,
        expose_get_all: false,
        gen_events: false,
        has_records: false,
    },
];

/// The generic messages of a class, derived from its fields, as
/// (name, kind). Used for dispatch and `system.listMethods`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generic {
    GetRecord,
    GetByUuid,
    GetAll,
    GetAllRecords,
    GetAllRecordsWhere,
    GetAllWhere,
    GetByNameLabel,
    Get(&'static str),
    Set(&'static str),
    AddTo(&'static str),
    RemoveFrom(&'static str),
}

impl Generic {
    /// Number of parameters including the session.
    pub fn arity(&self) -> usize {
        match self {
            Generic::GetAll | Generic::GetAllRecords => 1,
            Generic::GetRecord
            | Generic::GetByUuid
            | Generic::GetAllRecordsWhere
            | Generic::GetAllWhere
            | Generic::GetByNameLabel
            | Generic::Get(_) => 2,
            Generic::Set(_) | Generic::RemoveFrom(_) => 3,
            Generic::AddTo(_) => 3,
        }
    }
}

/// Resolve a generic message name for a class.
pub fn generic(class: &'static Class, msg: &str) -> Option<Generic> {
    if !class.has_records {
        return None;
    }
    let g = match msg {
        "get_record" => Generic::GetRecord,
        "get_by_uuid" => Generic::GetByUuid,
        "get_all" if class.expose_get_all => Generic::GetAll,
        "get_all_records" if class.expose_get_all => Generic::GetAllRecords,
        "get_all_records_where" if class.expose_get_all => Generic::GetAllRecordsWhere,
        "get_all_where" if class.expose_get_all => Generic::GetAllWhere,
        "get_by_name_label" if class.is_named() => Generic::GetByNameLabel,
        _ => {
            let (kind, fname): (fn(&'static str) -> Generic, &str) =
                if let Some(n) = msg.strip_prefix("get_") {
                    (Generic::Get, n)
                } else if let Some(n) = msg.strip_prefix("set_") {
                    (Generic::Set, n)
                } else if let Some(n) = msg.strip_prefix("add_to_") {
                    (Generic::AddTo, n)
                } else if let Some(n) = msg.strip_prefix("remove_from_") {
                    (Generic::RemoveFrom, n)
                } else {
                    return None;
                };
            let field = class.field(fname)?;
            let g = kind(field.name);
            match g {
                Generic::Get(_) => {}
                Generic::Set(_) if field.qual == Qual::RW => {}
                Generic::AddTo(_) | Generic::RemoveFrom(_)
                    if field.qual == Qual::RW && matches!(field.ty, Ty::Map(..) | Ty::Set(_)) => {}
                _ => return None,
            }
            g
        }
    };
    Some(g)
}

/// All method names, as returned by `system.listMethods`.
pub fn list_methods() -> Vec<String> {
    let mut out = vec![
        "system.listMethods".to_string(),
        "system.methodHelp".to_string(),
        "system.methodSignature".to_string(),
    ];
    for c in CLASSES {
        let n = c.name;
        if c.has_records {
            out.push(format!("{n}.get_record"));
            out.push(format!("{n}.get_by_uuid"));
            if c.expose_get_all {
                for g in [
                    "get_all",
                    "get_all_where",
                    "get_all_records",
                    "get_all_records_where",
                ] {
                    out.push(format!("{n}.{g}"));
                }
            }
            if c.is_named() {
                out.push(format!("{n}.get_by_name_label"));
            }
            for fl in c.fields {
                out.push(format!("{n}.get_{}", fl.name));
                if fl.qual == Qual::RW {
                    out.push(format!("{n}.set_{}", fl.name));
                    if matches!(fl.ty, Ty::Map(..) | Ty::Set(_)) {
                        out.push(format!("{n}.add_to_{}", fl.name));
                        out.push(format!("{n}.remove_from_{}", fl.name));
                    }
                }
            }
        }
        for msg in c.messages {
            out.push(format!("{n}.{}", msg.name));
            if msg.asynchronous {
                out.push(format!("Async.{n}.{}", msg.name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_referenced_exist_and_defaults_valid() {
        fn check(ty: &Ty) {
            match ty {
                Ty::Enum(e) => assert!(enum_def(e).is_some(), "missing enum {e}"),
                Ty::Set(t) => check(t),
                Ty::Map(k, v) => {
                    check(k);
                    check(v)
                }
                _ => {}
            }
        }
        for c in CLASSES {
            for fl in c.fields {
                check(&fl.ty);
                if let (Ty::Enum(e), Def::Str(s)) = (fl.ty, fl.default) {
                    assert!(enum_def(e).unwrap().values.contains(&s));
                }
            }
            if c.has_records {
                assert!(c.field("uuid").is_some());
            }
        }
    }

    #[test]
    fn generic_resolution() {
        let pool = class("pool").unwrap();
        assert_eq!(
            generic(pool, "set_name_label"),
            Some(Generic::Set("name_label"))
        );
        assert_eq!(generic(pool, "set_master"), None);
        assert_eq!(
            generic(pool, "add_to_other_config"),
            Some(Generic::AddTo("other_config"))
        );
        assert_eq!(generic(pool, "get_master"), Some(Generic::Get("master")));
        assert!(generic(class("session").unwrap(), "get_by_name_label").is_none());
        assert!(generic(class("session").unwrap(), "get_all_records").is_none());
        assert!(!list_methods().contains(&"session.get_all_records".to_string()));
        assert!(list_methods().contains(&"host_cpu.get_all_records".to_string()));
    }
}
