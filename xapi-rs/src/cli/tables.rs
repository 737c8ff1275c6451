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
pub const PLAIN: u16 = 1;
/// Never listed (param-get still reads it).
pub const HIDDEN: u16 = 2;
/// `*-list` shows `<expensive field>`.
pub const EXPENSIVE: u16 = 4;
/// ` [DEPRECATED]`.
pub const DEPRECATED: u16 = 8;
/// A map shown as the set of its values (`current-operations`).
pub const VALUES: u16 = 16;
/// Read-only from the CLI even if the datamodel has a setter.
pub const RO: u16 = 32;
/// Writable from the CLI although the datamodel field is not RW: the
/// reference has a setter (the datamodel's explicit `set_F`/`add_to_F`).
pub const W: u16 = 64;
/// The value with its first letter lowercased (`power-state`: `halted`).
pub const LOWER: u16 = 128;
/// A float printed as records.ml's `string_of_float`: `%.3f`.
pub const F3: u16 = 256;
/// A set printed joined by `, ` (records.ml's `concat_with_comma`).
pub const COMMA: u16 = 512;
/// Computed by the reference from a call this server does not answer
/// (data sources): shows the reference's fallback text, [`Entry::none`].
pub const COMPUTED: u16 = 1024;
/// records.ml's SR `host` (see [`sr_host`]).
pub const SR_HOST: u16 = 2048;
/// `<EMPTY>` when the record's `empty` is true (VBD `vdi-name-label`).
pub const EMPTY: u16 = 4096;
/// A map the reference still prints but the datamodel no longer has
/// (VM_guest_metrics `memory`, `disks`): the entry names any field of the
/// object read through; shown empty when that object exists.
pub const GONE_MAP: u16 = 8192;
/// The value in single quotes (VM `last-boot-record`).
pub const QUOTED: u16 = 16384;
/// Set from a size with a unit (`512MiB`), as records.ml's setters read
/// the memory fields (`Record_util.bytes_of_string`).
pub const BYTES: u16 = 32768;

/// One override entry: a datamodel field (or `ref_field.target_field`),
/// the CLI name (`""`: the generic name) and flags.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub field: &'static str,
    pub name: &'static str,
    pub flags: u16,
    /// Shown for a read-through field whose object does not exist
    /// (records.ml's `Option.fold ~none:`), and for a COMPUTED field.
    pub none: &'static str,
    /// A set the reference computes with a call (`allowed-VBD-devices`),
    /// worked out here from the database as that call's handler does.
    pub derive: Option<Derive>,
}

/// Computes a derived set field of a record.
pub type Derive = fn(&Db, &Record) -> Vec<String>;

const fn e(field: &'static str, name: &'static str, flags: u16) -> Entry {
    Entry {
        field,
        name,
        flags,
        none: NOT_IN_DATABASE,
        derive: None,
    }
}
const fn g(field: &'static str) -> Entry {
    e(field, "", 0)
}
/// A read-through (or computed) field with its own fallback text.
const fn n(field: &'static str, name: &'static str, flags: u16, none: &'static str) -> Entry {
    Entry {
        field,
        name,
        flags,
        none,
        derive: None,
    }
}
/// A set field computed by `derive` (shown through the datamodel field
/// `field`'s type and access).
const fn d(field: &'static str, name: &'static str, flags: u16, derive: Derive) -> Entry {
    Entry {
        field,
        name,
        flags,
        none: NOT_IN_DATABASE,
        derive: Some(derive),
    }
}

/// records.ml's `allowed-VBD-devices`/`allowed-VIF-devices`.
fn allowed_devices(db: &Db, rec: &Record, vif: bool) -> Vec<String> {
    crate::api::vm::checks::allowed_devices(rec, vif, |c, r| db.get(c, r))
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
    /// Filters `<cli>-list` always applies (CLI field, value), as the
    /// reference's `make_param_funs` default filters: `vm` is the VMs that
    /// are not templates, `template` the templates that are not snapshots.
    pub filter: &'static [(&'static str, &'static str)],
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

// The VM-side records of records.ml (`vm_record`, `vbd_record`, `vif_record`,
// `vdi_record`, `sr_record`, `pbd_record`, `net_record`, `pif_record`,
// `console_record`, `sm_record`), field for field in its order. Fields the
// reference computes with calls this server does not answer yet are noted
// where they would be.

const VM_LAYOUT: &[Entry] = &[
    g("uuid"),
    g("name_label"),
    g("name_description"),
    g("user_version"),
    g("is_a_template"),
    e("is_default_template", "", W),
    g("is_a_snapshot"),
    g("snapshot_of"),
    e("snapshots", "", PLAIN),
    g("snapshot_time"),
    e("transportable_snapshot_id", "", HIDDEN),
    e("snapshot_info", "", PLAIN),
    g("parent"),
    e("children", "", PLAIN),
    g("is_control_domain"),
    e("power_state", "", LOWER),
    e("metrics.memory_actual", "memory-actual", 0),
    // The reference queries the memory_target data source; without it: its fallback.
    n(
        "memory_target",
        "memory-target",
        EXPENSIVE | COMPUTED | RO,
        "<unknown>",
    ),
    g("memory_overhead"),
    e("memory_static_max", "", W | BYTES),
    e("memory_dynamic_max", "", W | BYTES),
    e("memory_dynamic_min", "", W | BYTES),
    e("memory_static_min", "", W | BYTES),
    e("suspend_VDI", "suspend-VDI-uuid", W),
    e("suspend_SR", "suspend-SR-uuid", 0),
    g("VCPUs_params"),
    e("VCPUs_max", "", W),
    e("VCPUs_at_startup", "", W),
    g("actions_after_shutdown"),
    g("actions_after_softreboot"),
    g("actions_after_reboot"),
    e("actions_after_crash", "", W),
    e("consoles", "console-uuids", 0),
    n("metrics.hvm", "hvm", 0, "false"),
    n("metrics.nomigrate", "nomigrate", HIDDEN, "false"),
    n("metrics.nested_virt", "nested-virt", HIDDEN, "false"),
    e("platform", "", W),
    n("metrics.numa_optimised", "numa-optimised", 0, "false"),
    n("metrics.numa_nodes", "numa-nodes", 0, "0"),
    n("metrics.numa_node_memory", "numa-node-memory", 0, "[]"),
    g("allowed_operations"),
    e("current_operations", "", VALUES),
    e("blocked_operations", "", W),
    d("VBDs", "allowed-VBD-devices", EXPENSIVE | RO, |db, r| {
        allowed_devices(db, r, false)
    }),
    d("VIFs", "allowed-VIF-devices", EXPENSIVE | RO, |db, r| {
        allowed_devices(db, r, true)
    }),
    // possible-hosts: computed by the reference, not shown yet
    e("domain_type", "", W),
    e("metrics.current_domain_type", "current-domain-type", 0),
    e("HVM_boot_policy", "", W),
    g("HVM_boot_params"),
    e("HVM_shadow_multiplier", "", W | F3),
    e("NVRAM", "", HIDDEN | W),
    g("PV_kernel"),
    g("PV_ramdisk"),
    g("PV_args"),
    g("PV_legacy_args"),
    g("PV_bootloader"),
    g("PV_bootloader_args"),
    e("last_boot_CPU_flags", "", PLAIN),
    e("last_booted_record", "last-boot-record", EXPENSIVE | QUOTED),
    g("resident_on"),
    g("affinity"),
    e("other_config", "", W),
    e("domid", "dom-id", 0),
    e("recommendations", "", RO),
    g("xenstore_data"),
    e("ha_always_run", "", DEPRECATED | W),
    e("ha_restart_priority", "", W),
    e("blobs", "", PLAIN),
    n("metrics.start_time", "start-time", 0, "<unknown time>"),
    n("metrics.install_time", "install-time", 0, "<unknown time>"),
    e("metrics.VCPUs_number", "VCPUs-number", 0),
    // Per-VCPU data sources; none here, so the reference's `with _ -> ""`.
    n(
        "VCPUs_params",
        "VCPUs-utilisation",
        EXPENSIVE | COMPUTED | RO,
        "",
    ),
    e("guest_metrics.os_version", "os-version", 0),
    e("guest_metrics.netbios_name", "netbios-name", 0),
    e("guest_metrics.PV_drivers_version", "PV-drivers-version", 0),
    e(
        "guest_metrics.PV_drivers_up_to_date",
        "PV-drivers-up-to-date",
        DEPRECATED,
    ),
    e("guest_metrics.live", "memory", GONE_MAP),
    e("guest_metrics.live", "disks", GONE_MAP),
    g("VBDs"),
    e("guest_metrics.networks", "networks", 0),
    e("guest_metrics.services", "services", 0),
    e(
        "guest_metrics.PV_drivers_detected",
        "PV-drivers-detected",
        0,
    ),
    e("guest_metrics.other", "other", 0),
    e("guest_metrics.live", "live", 0),
    e(
        "guest_metrics.last_updated",
        "guest-metrics-last-updated",
        0,
    ),
    e(
        "guest_metrics.can_use_hotplug_vbd",
        "can-use-hotplug-vbd",
        0,
    ),
    e(
        "guest_metrics.can_use_hotplug_vif",
        "can-use-hotplug-vif",
        0,
    ),
    // cooperative: computed by the reference, not shown yet
    e("tags", "", COMMA),
    e("appliance", "", W),
    e("groups", "", PLAIN | W),
    g("secureboot_certificates_state"),
    e("snapshot_schedule", "", W),
    g("is_vmss_snapshot"),
    e("start_delay", "", W),
    e("shutdown_delay", "", W),
    e("order", "", W),
    g("version"),
    g("generation_id"),
    e("hardware_platform_version", "", RO),
    e("has_vendor_device", "", W),
    g("requires_reboot"),
    g("reference_label"),
    g("bios_strings"),
    e("pending_guidances", "", PLAIN),
    e("VTPMs", "vtpms", PLAIN),
    e("pending_guidances_recommended", "", PLAIN),
    e("pending_guidances_full", "", PLAIN),
];

const VBD_LAYOUT: &[Entry] = &[
    g("uuid"),
    e("VM", "vm-uuid", 0),
    e("VM.name_label", "vm-name-label", 0),
    e("VDI", "vdi-uuid", 0),
    e("VDI.name_label", "vdi-name-label", EMPTY),
    g("allowed_operations"),
    e("current_operations", "", VALUES),
    g("empty"),
    g("device"),
    g("userdevice"),
    g("bootable"),
    e("mode", "", W),
    g("type"),
    g("unpluggable"),
    g("currently_attached"),
    // attachable: VBD.assert_attachable, not shown yet
    g("storage_lock"),
    g("status_code"),
    g("status_detail"),
    e("qos_algorithm_type", "qos_algorithm_type", 0),
    e("qos_algorithm_params", "qos_algorithm_params", 0),
    e("qos_supported_algorithms", "qos_supported_algorithms", 0),
    g("other_config"),
    n("device", "io_read_kbs", EXPENSIVE | COMPUTED, "<unknown>"),
    n("device", "io_write_kbs", EXPENSIVE | COMPUTED, "<unknown>"),
];

const VIF_LAYOUT: &[Entry] = &[
    g("uuid"),
    e("VM", "vm-uuid", 0),
    e("VM.name_label", "vm-name-label", 0),
    g("allowed_operations"),
    e("current_operations", "", VALUES),
    g("device"),
    g("MAC"),
    g("MAC_autogenerated"),
    g("MTU"),
    g("currently_attached"),
    e("qos_algorithm_type", "qos_algorithm_type", 0),
    e("qos_algorithm_params", "qos_algorithm_params", 0),
    e("qos_supported_algorithms", "qos_supported_algorithms", 0),
    g("other_config"),
    e("network", "network-uuid", 0),
    e("network.name_label", "network-name-label", 0),
    n("device", "io_read_kbs", EXPENSIVE | COMPUTED, "<unknown>"),
    n("device", "io_write_kbs", EXPENSIVE | COMPUTED, "<unknown>"),
    e("locking_mode", "", W),
    e("ipv4_allowed", "", W),
    e("ipv6_allowed", "", W),
    g("ipv4_configuration_mode"),
    e("ipv4_addresses", "", PLAIN),
    g("ipv4_gateway"),
    g("ipv6_configuration_mode"),
    e("ipv6_addresses", "", PLAIN),
    g("ipv6_gateway"),
    e("trunks", "", W),
];

const VDI_LAYOUT: &[Entry] = &[
    g("uuid"),
    e("name_label", "", W),
    e("name_description", "", W),
    g("is_a_snapshot"),
    g("snapshot_of"),
    e("snapshots", "", PLAIN),
    g("snapshot_time"),
    g("allowed_operations"),
    e("current_operations", "", VALUES),
    e("SR", "sr-uuid", 0),
    e("SR.name_label", "sr-name-label", 0),
    e("VBDs", "vbd-uuids", 0),
    e("crash_dumps", "crashdump-uuids", 0),
    g("virtual_size"),
    g("physical_utilisation"),
    g("location"),
    g("type"),
    g("sharable"),
    g("read_only"),
    g("storage_lock"),
    g("managed"),
    e("parent", "", DEPRECATED),
    g("missing"),
    g("is_tools_iso"),
    g("other_config"),
    e("xenstore_data", "", RO),
    e("sm_config", "", RO),
    e("on_boot", "", W),
    e("allow_caching", "", W),
    g("metadata_latest"),
    g("metadata_of_pool"),
    e("tags", "", COMMA),
    g("cbt_enabled"),
];

const SR_LAYOUT: &[Entry] = &[
    g("uuid"),
    e("name_label", "", W),
    e("name_description", "", W),
    e("PBDs", "host", SR_HOST | PLAIN),
    g("allowed_operations"),
    e("current_operations", "", VALUES),
    g("VDIs"),
    g("PBDs"),
    g("virtual_allocation"),
    g("physical_utilisation"),
    g("physical_size"),
    g("type"),
    g("content_type"),
    e("shared", "", W),
    g("introduced_by"),
    g("is_tools_sr"),
    g("other_config"),
    e("sm_config", "", RO),
    e("blobs", "", PLAIN),
    g("local_cache_enabled"),
    e("tags", "", COMMA),
    g("clustered"),
];

const PBD_LAYOUT: &[Entry] = &[
    g("uuid"),
    e("host", "", DEPRECATED),
    e("host", "host-uuid", 0),
    e("host.name_label", "host-name-label", 0),
    e("SR", "sr-uuid", 0),
    e("SR.name_label", "sr-name-label", 0),
    g("device_config"),
    g("currently_attached"),
    g("other_config"),
];

const NETWORK_LAYOUT: &[Entry] = &[
    g("uuid"),
    g("name_label"),
    g("name_description"),
    e("VIFs", "VIF-uuids", 0),
    e("PIFs", "PIF-uuids", 0),
    g("MTU"),
    g("bridge"),
    g("managed"),
    g("other_config"),
    e("blobs", "", PLAIN),
    e("tags", "", COMMA),
    e("default_locking_mode", "", W),
    e("purpose", "", W),
];

const PIF_LAYOUT: &[Entry] = &[
    g("uuid"),
    g("device"),
    g("MAC"),
    g("physical"),
    g("managed"),
    g("currently_attached"),
    g("MTU"),
    g("VLAN"),
    e("VLAN_master_of", "vlan-master-of", 0),
    e("VLAN_slave_of", "vlan-slave-of", PLAIN),
    e("bond_master_of", "", PLAIN),
    g("bond_slave_of"),
    e("sriov_physical_PIF_of", "", PLAIN),
    e("sriov_logical_PIF_of", "", PLAIN),
    e("tunnel_access_PIF_of", "", PLAIN),
    e("tunnel_transport_PIF_of", "", PLAIN),
    g("management"),
    e("network", "network-uuid", 0),
    e("network.name_label", "network-name-label", 0),
    e("host", "host-uuid", 0),
    e("host.name_label", "host-name-label", 0),
    e("ip_configuration_mode", "IP-configuration-mode", 0),
    g("IP"),
    g("netmask"),
    g("gateway"),
    e("ipv6_configuration_mode", "IPv6-configuration-mode", 0),
    e("IPv6", "", PLAIN),
    e("ipv6_gateway", "IPv6-gateway", 0),
    g("primary_address_type"),
    g("DNS"),
    g("properties"),
    g("capabilities"),
    n("host", "io_read_kbs", EXPENSIVE | COMPUTED, "<unknown>"),
    n("host", "io_write_kbs", EXPENSIVE | COMPUTED, "<unknown>"),
    e("metrics.carrier", "carrier", 0),
    e("metrics.vendor_id", "vendor-id", 0),
    e("metrics.vendor_name", "vendor-name", 0),
    e("metrics.device_id", "device-id", 0),
    e("metrics.device_name", "device-name", 0),
    e("metrics.speed", "speed", 0),
    e("metrics.duplex", "duplex", 0),
    e("disallow_unplug", "", W),
    e("metrics.pci_bus_path", "pci-bus-path", 0),
    g("other_config"),
    g("igmp_snooping_status"),
];

const CONSOLE_LAYOUT: &[Entry] = &[
    g("uuid"),
    e("VM", "vm-uuid", 0),
    e("VM.name_label", "vm-name-label", 0),
    g("protocol"),
    g("location"),
    g("other_config"),
];

const SM_LAYOUT: &[Entry] = &[
    g("uuid"),
    g("name_label"),
    g("name_description"),
    g("type"),
    g("vendor"),
    g("copyright"),
    g("required_api_version"),
    e("capabilities", "", DEPRECATED | PLAIN),
    g("features"),
    e("configuration", "", PLAIN),
    g("driver_filename"),
    e("required_cluster_stack", "", PLAIN | COMMA),
    e("supported_image_formats", "", PLAIN),
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
        filter: &[],
    },
    CliClass {
        class: "host",
        cli: "host",
        list_defaults: &["uuid", "name-label", "name-description"],
        layout: HOST_LAYOUT,
        filter: &[],
    },
    CliClass {
        class: "host_cpu",
        cli: "host-cpu",
        list_defaults: &["uuid", "number", "vendor", "speed", "utilisation"],
        layout: HOST_CPU_LAYOUT,
        filter: &[],
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
        filter: &[],
    },
    CliClass {
        class: "VM",
        cli: "vm",
        list_defaults: &["name-label", "uuid", "power-state"],
        layout: VM_LAYOUT,
        filter: &[("is-a-template", "false")],
    },
    CliClass {
        class: "VM",
        cli: "template",
        list_defaults: &["name-label", "name-description", "uuid"],
        layout: VM_LAYOUT,
        filter: &[("is-a-template", "true"), ("is-a-snapshot", "false")],
    },
    CliClass {
        class: "VM",
        cli: "snapshot",
        list_defaults: &[
            "name-label",
            "name-description",
            "uuid",
            "snapshot_of",
            "snapshot_time",
            "is-vmss-snapshot",
        ],
        layout: VM_LAYOUT,
        filter: &[("is-a-snapshot", "true")],
    },
    CliClass {
        class: "VBD",
        cli: "vbd",
        list_defaults: &[
            "uuid",
            "vm-uuid",
            "vm-name-label",
            "vdi-uuid",
            "device",
            "empty",
        ],
        layout: VBD_LAYOUT,
        filter: &[],
    },
    CliClass {
        class: "VIF",
        cli: "vif",
        list_defaults: &["uuid", "device", "vm-uuid", "network-uuid"],
        layout: VIF_LAYOUT,
        filter: &[],
    },
    CliClass {
        class: "VDI",
        cli: "vdi",
        list_defaults: &[
            "uuid",
            "name-label",
            "name-description",
            "virtual-size",
            "read-only",
            "sharable",
            "sr-uuid",
        ],
        layout: VDI_LAYOUT,
        filter: &[],
    },
    CliClass {
        class: "SR",
        cli: "sr",
        list_defaults: &[
            "uuid",
            "name-label",
            "name-description",
            "host",
            "type",
            "content-type",
        ],
        layout: SR_LAYOUT,
        filter: &[],
    },
    CliClass {
        class: "PBD",
        cli: "pbd",
        list_defaults: &[
            "uuid",
            "host-uuid",
            "sr-uuid",
            "device-config",
            "currently-attached",
        ],
        layout: PBD_LAYOUT,
        filter: &[],
    },
    CliClass {
        class: "network",
        cli: "network",
        list_defaults: &["uuid", "name-label", "name-description", "bridge"],
        layout: NETWORK_LAYOUT,
        filter: &[],
    },
    CliClass {
        class: "PIF",
        cli: "pif",
        list_defaults: &[
            "uuid",
            "device",
            "VLAN",
            "MAC",
            "network-uuid",
            "currently-attached",
            "host-uuid",
        ],
        layout: PIF_LAYOUT,
        filter: &[],
    },
    CliClass {
        class: "console",
        cli: "console",
        list_defaults: &["uuid", "vm-uuid", "vm-name-label", "protocol", "location"],
        layout: CONSOLE_LAYOUT,
        filter: &[],
    },
    CliClass {
        class: "SM",
        cli: "sm",
        list_defaults: &[
            "uuid",
            "type",
            "name-label",
            "name-description",
            "vendor",
            "copyright",
            "configuration",
        ],
        layout: SM_LAYOUT,
        filter: &[],
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
    pub flags: u16,
    /// [`Entry::none`].
    pub none: &'static str,
    pub access: Access,
    /// [`Entry::derive`].
    pub derive: Option<Derive>,
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

fn access_of(ty: &Ty, qual: Qual, flags: u16) -> Access {
    let rw = (qual == Qual::RW || flags & W != 0) && flags & (RO | COMPUTED) == 0;
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
                _ if en.flags & GONE_MAP != 0 => Access::MapRo,
                Some((_, f)) => access_of(&f.ty, Qual::DynamicRO, en.flags),
                None => access_of(&field.ty, field.qual, en.flags),
            };
            Some(Column {
                name,
                field,
                via,
                flags: en.flags,
                none: en.none,
                access,
                derive: en.derive,
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

/// Enum values the reference prints differently from their wire names
/// (record_util.ml's "intentional shadowing"): (enum, wire, text).
const ENUM_TEXT: &[(&str, &str, &str)] = &[
    ("on_normal_exit", "destroy", "Destroy"),
    ("on_normal_exit", "restart", "Restart"),
    ("on_crash_behaviour", "destroy", "Destroy"),
    (
        "on_crash_behaviour",
        "coredump_and_destroy",
        "Core dump and destroy",
    ),
    ("on_crash_behaviour", "restart", "Restart"),
    (
        "on_crash_behaviour",
        "coredump_and_restart",
        "Core dump and restart",
    ),
    ("on_crash_behaviour", "preserve", "Preserve"),
    ("on_crash_behaviour", "rename_restart", "Rename restart"),
    ("on_softreboot_behavior", "destroy", "Destroy"),
    ("on_softreboot_behavior", "restart", "Restart"),
    ("on_softreboot_behavior", "preserve", "Preserve"),
    ("on_softreboot_behavior", "soft_reboot", "Soft reboot"),
    ("vbd_mode", "RO", "ro"),
    ("vbd_mode", "RW", "rw"),
    ("vdi_type", "system", "System"),
    ("vdi_type", "user", "User"),
    ("vdi_type", "ephemeral", "Ephemeral"),
    ("vdi_type", "suspend", "Suspend"),
    ("vdi_type", "crashdump", "Crashdump"),
    ("vdi_type", "ha_statefile", "HA statefile"),
    ("vdi_type", "metadata", "Metadata"),
    ("vdi_type", "redo_log", "Redo log"),
    ("vdi_type", "pvs_cache", "PVS cache"),
    ("vdi_type", "cbt_metadata", "CBT metadata"),
    ("domain_type", "pv_in_pvh", "pv-in-pvh"),
    ("console_protocol", "vt100", "VT100"),
    ("console_protocol", "rfb", "RFB"),
    ("console_protocol", "rdp", "RDP"),
    ("tristate_type", "yes", "true"),
    ("tristate_type", "no", "false"),
    (
        "vm_operations",
        "assert_operation_valid",
        "assertoperationvalid",
    ),
    ("vm_operations", "data_source_op", "data_sources_op"),
];

fn enum_text(en: &str, wire: &str) -> String {
    ENUM_TEXT
        .iter()
        .find(|(e, w, _)| *e == en && *w == wire)
        .map_or_else(|| wire.to_string(), |(_, _, t)| t.to_string())
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
        (Ty::Enum(en), V::S(w)) => enum_text(en, w),
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

/// The value a column reads: `None` when a read-through field's object
/// does not exist.
fn column_value(db: &Db, col: &Column, rec: &Record) -> Option<(Ty, V)> {
    let own = rec
        .get(col.field.name)
        .cloned()
        .unwrap_or_else(|| crate::model::value::zero(&col.field.ty));
    match col.via {
        Some((tc, tf)) => {
            let target = own.as_str().and_then(|r| db.get(tc.name, r))?;
            let v = target
                .get(tf.name)
                .cloned()
                .unwrap_or_else(|| crate::model::value::zero(&tf.ty));
            Some((tf.ty, v))
        }
        None => Some((col.field.ty, own)),
    }
}

/// records.ml's SR `host`: the name of the host of the SR's only PBD,
/// `<shared>` when it has several.
fn sr_host(db: &Db, rec: &Record) -> String {
    match rec.get("PBDs") {
        Some(V::A(pbds)) if pbds.len() > 1 => "<shared>".into(),
        Some(V::A(pbds)) if pbds.len() == 1 => pbds[0]
            .as_str()
            .and_then(|r| db.get("PBD", r))
            .and_then(|pbd| pbd.get("host").and_then(V::as_str).map(str::to_string))
            .and_then(|h| db.get("host", &h))
            .and_then(|h| h.get("name_label").and_then(V::as_str).map(str::to_string))
            .unwrap_or_else(|| NOT_IN_DATABASE.into()),
        _ => NOT_IN_DATABASE.into(),
    }
}

fn rendered(db: &Db, col: &Column, ty: Ty, value: &V) -> Field {
    match (&ty, value) {
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
            let mut f = Field::set(&col.name, items, col.access == Access::SetRw);
            if col.flags & COMMA != 0 {
                f.value = f.set.as_deref().unwrap_or_default().join(", ");
            }
            f
        }
        (Ty::Set(t), V::A(items)) if col.flags & COMMA != 0 => {
            let items: Vec<String> = items.iter().map(|i| text(db, t, i)).collect();
            Field::new(&col.name, items.join(", "), col.access)
        }
        (Ty::Float, V::F(x)) if col.flags & F3 != 0 => {
            Field::new(&col.name, format!("{x:.3}"), col.access)
        }
        _ => {
            let mut t = text(db, &ty, value);
            if col.flags & LOWER != 0 {
                if let Some(c) = t.get(..1) {
                    t = c.to_lowercase() + &t[1..];
                }
            }
            Field::new(&col.name, t, col.access)
        }
    }
}

/// Renders one record of class `c` as its CLI fields.
pub fn record_fields(db: &Db, cols: &[Column], rec: &Record) -> Vec<Field> {
    cols.iter()
        .map(|col| {
            let mut f = if let Some(derive) = col.derive {
                Field::set(&col.name, derive(db, rec), false)
            } else if col.flags & COMPUTED != 0 {
                Field::new(&col.name, col.none, col.access)
            } else if col.flags & GONE_MAP != 0 {
                let shown = column_value(db, col, rec).map_or(col.none, |_| "");
                Field::new(&col.name, shown, col.access)
            } else if col.flags & SR_HOST != 0 {
                Field::new(&col.name, sr_host(db, rec), col.access)
            } else if col.flags & EMPTY != 0 && rec.get("empty") == Some(&V::B(true)) {
                Field::new(&col.name, "<EMPTY>", col.access)
            } else {
                match column_value(db, col, rec) {
                    Some((ty, v)) => rendered(db, col, ty, &v),
                    None => Field::new(&col.name, col.none, col.access),
                }
            };
            if col.flags & QUOTED != 0 {
                f.value = format!("'{}'", f.value);
            }
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
            let cols = columns(cc);
            let missing: Vec<&str> = cc
                .layout
                .iter()
                .filter(|en| {
                    !cols
                        .iter()
                        .any(|c| c.name == en.name || c.name == cli_name(en.field))
                })
                .map(|en| en.field)
                .collect();
            assert_eq!(cols.len(), cc.layout.len(), "{}: {missing:?}", cc.cli);
        }
    }
}
