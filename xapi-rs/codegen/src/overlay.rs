//! Facts the definition (xenapi-datamodel.json) does not carry, kept by
//! hand in this one place.

/// The reference's named releases in order, with the API version each
/// announces (`release_order_full` in the reference's datamodel_types.ml).
/// Numbered releases (`25.6.0`, ...) are newer than every named one and
/// announce the version of the last named one.
pub const RELEASES: &[(&str, i64, i64)] = &[
    ("rio", 1, 1),
    ("miami", 1, 2),
    ("symc", 1, 2),
    ("orlando", 1, 3),
    ("orlando-update-1", 1, 3),
    ("george", 1, 6),
    ("midnight-ride", 1, 7),
    ("cowley", 1, 8),
    ("boston", 1, 9),
    ("tampa", 1, 10),
    ("clearwater", 2, 0),
    ("vgpu-tech-preview", 2, 0),
    ("vgpu-productisation", 2, 1),
    ("clearwater-felton", 2, 2),
    ("clearwater-whetstone", 2, 2),
    ("creedence", 2, 3),
    ("cream", 2, 4),
    ("indigo", 2, 4),
    ("dundee", 2, 5),
    ("ely", 2, 6),
    ("falcon", 2, 7),
    ("inverness", 2, 8),
    ("jura", 2, 9),
    ("kolkata", 2, 10),
    ("lima", 2, 11),
    ("naples", 2, 12),
    ("oslo", 2, 13),
    ("quebec", 2, 14),
    ("stockholm", 2, 15),
    ("stockholm_psr", 2, 15),
    ("nile-preview", 2, 20),
    ("nile", 2, 21),
];

/// An error code with its parameter names and the reference's description
/// (`Datamodel_errors`): the definition names errors in messages' `errors`
/// lists but gives neither. Kept for the errors this daemon raises; codes
/// missing from the definition (protocol-level ones) are added from here.
pub struct ErrorInfo {
    pub code: &'static str,
    pub params: &'static [&'static str],
    pub doc: &'static str,
}

const fn err(code: &'static str, params: &'static [&'static str], doc: &'static str) -> ErrorInfo {
    ErrorInfo { code, params, doc }
}

pub const ERRORS: &[ErrorInfo] = &[
    err("MESSAGE_METHOD_UNKNOWN", &["method"], "You tried to call a method that does not exist. The method name that you used is echoed."),
    err("MESSAGE_PARAMETER_COUNT_MISMATCH", &["method", "expected", "received"], "You tried to call a method with the incorrect number of parameters. The fully-qualified method name that you used, and the number of received and expected parameters are returned."),
    err("MESSAGE_REMOVED", &[], "This function is no longer available."),
    err("NOT_IMPLEMENTED", &["function"], "The function is not implemented"),
    err("HANDLE_INVALID", &["class", "handle"], "You gave an invalid object reference. The object may have recently been deleted. The class parameter gives the type of reference given, and the handle parameter echoes the bad value given."),
    err("UUID_INVALID", &["type", "uuid"], "The uuid you supplied was invalid."),
    err("SESSION_INVALID", &["handle"], "You gave an invalid session reference. It may have been invalidated by a server restart, or timed out. You should get a new session handle, using one of the session.login_ calls. This error does not invalidate the current connection. The handle parameter echoes the bad value given."),
    err("SESSION_AUTHENTICATION_FAILED", &["uname", "msg"], "The credentials given by the user are incorrect, so access has been denied, and you have not been issued a session handle."),
    err("SESSION_NOT_REGISTERED", &["handle"], "This session is not registered to receive events. You must call event.register before event.next. The session handle you are using is echoed."),
    err("RBAC_PERMISSION_DENIED", &["permission", "message"], "RBAC permission denied."),
    err("FIELD_TYPE_ERROR", &["field"], "The value specified is of the wrong type"),
    err("MAP_DUPLICATE_KEY", &["type", "param_name", "uuid", "key"], "You tried to add a key-value pair to a map, but that key is already there."),
    err("INVALID_VALUE", &["field", "value"], "The value given is invalid"),
    err("EVENTS_LOST", &[], "Some events have been lost from the queue and cannot be retrieved."),
    err("OPERATION_NOT_ALLOWED", &["reason"], "You attempted an operation that was not allowed."),
    err("INTERNAL_ERROR", &["message"], "The server failed to handle your request, due to an internal error. The given message may give details useful for debugging the problem."),
    err("XMLRPC_UNMARSHAL_FAILURE", &["expected", "received"], "The server failed to unmarshal the XMLRPC message; it was expecting one element and received something else."),
    err("JSONRPC_UNMARSHAL_FAILURE", &["message"], ""),
    err("EVENT_FROM_TOKEN_PARSE_FAILURE", &["token"], "The event.from token could not be parsed. Valid values include: '', and a value returned from a previous event.from call."),
    err("REQUEST_TOO_LARGE", &[], ""),
    err("TASK_CANCELLED", &["task"], "The request was asynchronously canceled."),
    err("TOO_MANY_PENDING_TASKS", &[], "The request was rejected because there are too many pending tasks on the server."),
    // VM lifecycle (api/vm): parameters as the reference raises them; the
    // descriptions are what `xe` prints for them.
    err("VM_BAD_POWER_STATE", &["vm", "expected", "actual"], "You attempted an operation on a VM that was not in an appropriate power state at the time; for example, you attempted to start a VM that was already running. The parameters returned are the VM's handle, and the expected and actual VM state at the time of the call."),
    err("VM_IS_TEMPLATE", &["vm", "operation"], "The operation attempted is not valid for a template VM"),
    err("ONLY_PROVISION_TEMPLATE", &[], "The provision call can only be invoked on templates, not regular VMs."),
    err("VM_CANNOT_DELETE_DEFAULT_TEMPLATE", &["vm"], "You cannot delete the specified default template."),
    err("OTHER_OPERATION_IN_PROGRESS", &["class", "object", "operation_type", "operation_ref"], "Another operation involving the object is currently in progress"),
    err("MEMORY_CONSTRAINT_VIOLATION", &["constraint"], "The dynamic memory range does not satisfy the following constraint."),
    err("MEMORY_CONSTRAINT_VIOLATION_ORDER", &[], "The dynamic memory range violates constraint static_min <= dynamic_min <= dynamic_max <= static_max."),
    err("MEMORY_CONSTRAINT_VIOLATION_MAXPIN", &["reason"], "The dynamic memory range violates constraint static_min = dynamic_min = dynamic_max = static_max."),
    err("VALUE_NOT_SUPPORTED", &["field", "value", "reason"], "You attempted to set a value that is not supported by this implementation. The fully-qualified field name and the value that you tried to set are returned. Also returned is a developer-only diagnostic reason."),
    err("HOST_NOT_ENOUGH_FREE_MEMORY", &["needed", "available"], "Not enough host memory is available to perform this operation."),
    err("BOOTLOADER_FAILED", &["vm", "msg"], "The bootloader returned an error"),
    err("VM_SHUTDOWN_TIMEOUT", &["vm", "timeout"], "VM failed to shutdown before the timeout expired"),
    err("VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT", &["vm"], "VM didn't acknowledge the need to shutdown."),
    err("VM_NO_SUSPEND_SR", &["vm"], "This VM does not have a suspend SR specified."),
    err("VM_HAS_NO_SUSPEND_VDI", &["vm"], "VM cannot be resumed because it has no suspend VDI"),
    err("DEVICE_ALREADY_EXISTS", &["device"], "A device with the name given already exists on the selected VM"),
    err("DEVICE_ALREADY_ATTACHED", &["device"], "The device is already attached to a VM"),
    err("DEVICE_ALREADY_DETACHED", &["device"], "The device is not currently attached"),
    err("DEVICE_DETACH_REJECTED", &["type", "ref", "msg"], "The VM rejected the attempt to detach the device."),
    err("DEVICE_DETACH_TIMEOUT", &["type", "ref"], "A timeout happened while attempting to detach a device from a VM."),
    // Storage (api/storage).
    err("SR_FULL", &["requested", "maximum"], "The SR is full. Requested new size exceeds the maximum size"),
    err("SR_HAS_NO_PBDS", &["sr"], "The SR has no attached PBDs"),
    err("VDI_IN_USE", &["vdi", "operation"], "This operation cannot be performed because this VDI is in use by some other operation"),
    // Networks (api/network).
    err("HOST_CANNOT_ATTACH_NETWORK", &["host", "network"], "Host cannot attach network (in the case of NIC bonding, this may be because attaching the network on this host would require other networks [that are currently active] to be taken down)."),
    err("HOST_IS_SLAVE", &["Master IP address"], "You cannot make regular API calls directly on a supporter. Please pass API calls via the coordinator host."),
];

/// One-to-many relations, as (class, reference field, other class, set
/// field): the reference's `Datamodel.all_relations`, which the definition
/// does not carry. The database keeps the set side equal to the objects
/// whose reference field names it (VM.VBDs is every VBD whose VM is it),
/// in the same transaction as the change.
pub const RELATIONS: &[(&str, &str, &str, &str)] = &[
    ("VBD", "VM", "VM", "VBDs"),
    ("VIF", "VM", "VM", "VIFs"),
    ("console", "VM", "VM", "consoles"),
    ("crashdump", "VM", "VM", "crash_dumps"),
    ("VM", "resident_on", "host", "resident_VMs"),
    ("VM", "snapshot_of", "VM", "snapshots"),
    ("VM", "parent", "VM", "children"),
    ("VBD", "VDI", "VDI", "VBDs"),
    ("crashdump", "VDI", "VDI", "crash_dumps"),
    ("VDI", "SR", "SR", "VDIs"),
    ("VDI", "snapshot_of", "VDI", "snapshots"),
    ("PBD", "SR", "SR", "PBDs"),
    ("PBD", "host", "host", "PBDs"),
    ("VIF", "network", "network", "VIFs"),
    ("PIF", "network", "network", "PIFs"),
    ("PIF", "host", "host", "PIFs"),
    ("host_cpu", "host", "host", "host_CPUs"),
    ("task", "subtask_of", "task", "subtasks"),
];

/// Classes whose objects live only in memory (the reference's
/// `persist:PersistNothing`).
pub const NOT_PERSISTED: &[&str] = &["session", "task"];

/// Classes whose changes the event messages do not report
/// (`gen_events:false`).
pub const NO_EVENTS: &[&str] = &["session"];

/// Classes whose custom messages have no `Async.` variant (the reference
/// declares them without the `Async` flag).
pub const SYNC_ONLY: &[&str] = &["session", "event"];

/// Fields whose changes are kept in memory only, as (class, field): what
/// the periodic metrics refresh writes. The reference marks them
/// non-persistent in its datamodel, but the definition does not carry the
/// flag.
pub const VOLATILE: &[(&str, &str)] = &[
    ("host_cpu", "utilisation"),
    ("host_metrics", "last_updated"),
];
