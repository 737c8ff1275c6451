//! The `xe` VM operation commands (the reference's hand-written ones in
//! `cli_operations.ml`): the power operations, destroy, clone, copy,
//! install from a template and uninstall, on VMs chosen by the reference's
//! selectors (`uuid=`, `vm=<name or uuid>`, any field `name-label=X`,
//! `power-state=running`, `other-config:key=v`, `tags:contains=x`).

use super::{all_records, by_uuid, call, server_error, sv, tables, CliError, Client, CmdSpec, CR};
use crate::generated::errors::ErrorCode;
use crate::model;
use crate::model::value::{Record, V};
use crate::rpc::Ctx;
use std::sync::Arc;
use xe::args::{CommandLine, STD_PARAMS};
use xe::protocol::Command;
use xe::render::{Field, PrintVal, Printer};

/// The reference's `vmselectorsinfo`, appended to the help of commands
/// that take VM selectors.
pub const SELECTORS_INFO: &str = " VMs can be specified by filtering the full list of VMs on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the VM with that uuid, and 'power-state=halted' will select only VMs whose 'power-state' field is equal to 'halted'. The special pseudo-field 'vm' matches either of name-label or uuid. Where multiple VMs are matching, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe vm-list params=all'. If no parameters to select VMs are given, the operation will be performed on all VMs.";

fn spec(name: &str, reqd: &[&str], optn: &[&str], help: &str, selectors: bool) -> CmdSpec {
    CmdSpec {
        name: name.into(),
        reqd: super::s(reqd),
        optn: super::s(optn),
        help: help.into(),
        standard: true,
        vm_selectors: selectors,
    }
}

/// The commands, with the reference's parameters and help text.
pub fn commands() -> Vec<CmdSpec> {
    vec![
        spec(
            "vm-start",
            &[],
            &["force", "on", "paused"],
            "Start the selected VM(s). Where pooling is enabled, the host on which to start can be specified with the 'on' parameter that takes a uuid. The optional parameter '--force' will bypass any hardware-compatibility warnings.",
            true,
        ),
        spec(
            "vm-shutdown",
            &[],
            &["force"],
            "Shutdown the selected VM(s). The optional argument --force will forcibly shut down the VM.",
            true,
        ),
        spec("vm-reboot", &[], &["force"], "Reboot the selected VM(s).", true),
        spec(
            "vm-pause",
            &[],
            &[],
            "Pause a running VM. Note this operation does not free the associated memory (see 'vm-suspend').",
            true,
        ),
        spec("vm-unpause", &[], &[], "Unpause a paused VM.", true),
        spec("vm-suspend", &[], &[], "Suspend the selected VM(s).", true),
        spec(
            "vm-resume",
            &[],
            &["force", "on"],
            "Resume the selected VM(s).",
            true,
        ),
        CmdSpec {
            standard: false,
            ..spec(
                "vm-destroy",
                &["uuid"],
                &[],
                "Destroy a VM. This leaves the storage associated with the VM intact. To delete storage too, use vm-uninstall.",
                false,
            )
        },
        spec(
            "vm-clone",
            &["new-name-label"],
            &["new-name-description"],
            "Clone an existing VM, using storage-level fast disk clone operation where available.",
            true,
        ),
        spec(
            "vm-copy",
            &["new-name-label"],
            &["new-name-description", "sr-uuid"],
            "Copy an existing VM, but without using storage-level fast disk clone operation (even if this is available). The disk images of the copied VM are guaranteed to be 'full images' - i.e. not part of a CoW chain.",
            true,
        ),
        spec(
            "vm-install",
            &["new-name-label"],
            &["sr-name-label", "sr-uuid", "template", "copy-bios-strings-from"],
            "Install a new VM from a template. The template parameter can match either the template name or the uuid.",
            false,
        ),
        spec(
            "vm-uninstall",
            &[],
            &["force"],
            "Uninstall a VM. This operation will destroy those VDIs that are marked RW and connected to this VM only. To simply destroy the VM record, use vm-destroy.",
            true,
        ),
        CmdSpec {
            standard: false,
            ..spec(
                "vm-vcpu-hotplug",
                &["new-vcpus"],
                &[],
                "Dynamically adjust the number of VCPUs available to running VM.",
                true,
            )
        },
        CmdSpec {
            standard: false,
            // The reference's text has two tabs where its OCaml source
            // continues a line with `\t\t`.
            ..spec(
                "vm-memory-dynamic-range-set",
                &["min", "max"],
                &[],
                "Configure the dynamic memory range of a VM. The dynamic memory \t\trange defines soft lower and upper limits for a VM's memory. It's \t\tpossible to change these fields when a VM is running or halted. The \t\tdynamic range must fit within the static range.",
                true,
            )
        },
    ]
}

/// A memory size as the reference's `Record_util.bytes_of_string` reads
/// it: an integer, optional blanks, then an optional unit (b/bytes,
/// k/kb/kib, m/mb/mib, g/gb/gib, t/tb/tib; any case).
pub fn bytes_of_string(field: &str, x: &str) -> CR<i64> {
    let bad = || {
        failure(format!(
            "Failed to parse field '{field}': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '{x}'"
        ))
    };
    let t = x.trim_start();
    let digits = t
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(t.len(), |(i, _)| i);
    let size: i64 = t[..digits].parse().map_err(|_| bad())?;
    let unit = t[digits..].trim_start();
    let shift = match unit.to_ascii_lowercase().as_str() {
        _ if size < 0 => return Err(bad()),
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    size.checked_mul(1 << shift).ok_or_else(bad)
}

/// A VM as the selectors see it: its reference, record and CLI fields.
struct Sel {
    r: String,
    rec: Record,
    fields: Vec<Field>,
}

impl Sel {
    fn uuid(&self) -> String {
        self.rec
            .get("uuid")
            .and_then(V::as_str)
            .unwrap_or("")
            .to_string()
    }
}

/// A field of a record sent as a wire value.
fn get<'a>(rec: &'a V, k: &str) -> Option<&'a V> {
    match rec {
        V::M(m) => m.get(k),
        _ => None,
    }
}

fn failure(m: impl Into<String>) -> CliError {
    CliError::Failure(m.into())
}

/// Keeps the VMs matching one selector `k=v`, the field's kind read off
/// the first record as the reference does (`filter_records_on_fields`).
fn filter(vms: Vec<Sel>, k: &str, v: &str) -> CR<Vec<Sel>> {
    let Some(first) = vms.first() else {
        return Ok(vms);
    };
    let named = |n: &str| first.fields.iter().find(|f| f.name == n);
    enum Kind {
        Normal,
        Map(String, String),
        Set(String, String),
    }
    let kind = if named(k).is_some() {
        Kind::Normal
    } else if let Some((name, sub)) = k.split_once(':') {
        let f = named(name).ok_or_else(|| failure(format!("Unknown field '{k}'")))?;
        if f.set.is_some() {
            Kind::Set(name.to_string(), sub.to_string())
        } else if f.map.is_some() {
            Kind::Map(name.to_string(), sub.to_string())
        } else {
            return Err(failure(format!("Field '{name}' is not a set or map")));
        }
    } else {
        // The older `map-name-key=value` form: the longest map (then set)
        // whose name and a dash begin the parameter.
        let longest = |want_map: bool| {
            first
                .fields
                .iter()
                .filter(|f| {
                    (if want_map {
                        f.map.is_some()
                    } else {
                        f.set.is_some()
                    }) && k.starts_with(&format!("{}-", f.name))
                })
                .max_by_key(|f| f.name.len())
                .map(|f| (f.name.clone(), k[f.name.len() + 1..].to_string()))
        };
        match (longest(true), longest(false)) {
            (Some((n, sub)), _) => Kind::Map(n, sub),
            (None, Some((n, sub))) => Kind::Set(n, sub),
            (None, None) => return Err(failure(format!("Unknown field '{k}'"))),
        }
    };
    if let Kind::Set(_, sub) = &kind {
        if sub != "contains" {
            return Err(failure(
                "Invalid syntax for set filtering (should be set-param:contains=key)",
            ));
        }
    }
    Ok(vms
        .into_iter()
        .filter(|vm| {
            let field = |n: &str| vm.fields.iter().find(|f| f.name == n);
            match &kind {
                Kind::Normal => field(k).is_some_and(|f| f.value == v),
                Kind::Map(n, key) => field(n)
                    .and_then(|f| f.map.as_ref())
                    .is_some_and(|m| m.iter().any(|(mk, mv)| mk == key && mv == v)),
                Kind::Set(n, _) => field(n)
                    .and_then(|f| f.set.as_ref())
                    .is_some_and(|s| s.iter().any(|x| x == v)),
            }
        })
        .collect())
}

/// How a command selects its VMs (the reference's `do_vm_op` arguments).
struct Selecting {
    control_domains: bool,
    templates: bool,
    /// Several VMs allowed with `--multiple` (else one at a time).
    multiple: bool,
    /// The command's own parameters, which are not selectors.
    ignore: &'static [&'static str],
}

const PLAIN: Selecting = Selecting {
    control_domains: false,
    templates: false,
    multiple: true,
    ignore: &[],
};

/// The VMs the command line selects (`select_vms`).
async fn select(ctx: &Arc<Ctx>, sref: &str, cl: &CommandLine, how: &Selecting) -> CR<Vec<Sel>> {
    let cc = tables::CLI_CLASSES
        .iter()
        .find(|c| c.cli == "vm")
        .ok_or_else(|| failure("no vm class"))?;
    let cols = tables::columns(cc);
    let mut params: Vec<(String, String)> = Vec::new();
    if !how.templates {
        params.push(("is-a-template".into(), "false".into()));
    }
    if !how.control_domains {
        params.push(("is-control-domain".into(), "false".into()));
    }
    params.extend(cl.params.iter().cloned());
    let by_name = cl.get("vm").map(str::to_string);
    let mut vms: Vec<Sel> = all_records(ctx, sref, cc)
        .await?
        .into_iter()
        .filter(|(_, rec)| match &by_name {
            None => true,
            Some(v) => [rec.get("uuid"), rec.get("name_label")]
                .iter()
                .any(|x| x.and_then(|x| x.as_str()) == Some(v.as_str())),
        })
        .map(|(r, rec)| Sel {
            fields: tables::record_fields(&ctx.db, &cols, &rec),
            r,
            rec,
        })
        .collect();
    // Stable order, so that `--multiple` acts and reports in one order.
    vms.sort_by_key(|s| s.uuid());
    for (k, v) in &params {
        let stem = k.split(':').next().unwrap_or("");
        if k == "vm" || STD_PARAMS.contains(&stem) || how.ignore.contains(&stem) {
            continue;
        }
        vms = filter(vms, k, v)?;
    }
    match vms.len() {
        0 => Err(failure("No matching VMs found")),
        1 => Ok(vms),
        _ if how.multiple && cl.get_bool("multiple") => Ok(vms),
        _ if how.multiple => Err(failure(
            "Multiple matches VMs found. --multiple required to complete the operation",
        )),
        _ => Err(failure(
            "Multiple matches VMs found. Operation can only be performed on one VM at a time",
        )),
    }
}

/// An error as `do_multiple` records it for one VM.
fn describe(ctx: &Ctx, e: CliError) -> String {
    match e {
        CliError::Api(v) => {
            let code = v.first().cloned().unwrap_or_default();
            let params = &v[1.min(v.len())..];
            let lines: Vec<String> = server_error(ctx, &code, params)
                .into_iter()
                .filter_map(|c| match c {
                    Command::PrintStderr(s) => Some(s.trim_end_matches('\n').to_string()),
                    _ => None,
                })
                .collect();
            if lines.is_empty() {
                format!("{code}: [ {} ]", params.join("; "))
            } else {
                lines.join("\n")
            }
        }
        CliError::Failure(m) => format!("Failure: [ {m} ]"),
        CliError::Cli(m) => m,
        other => format!("{other:?}"),
    }
}

/// Runs `op` on each selected VM; with several, failures are collected
/// and reported together afterwards, as the reference's `do_multiple`.
async fn each<T, F, Fut>(ctx: &Arc<Ctx>, vms: Vec<Sel>, mut op: F) -> CR<Vec<T>>
where
    F: FnMut(Sel) -> Fut,
    Fut: std::future::Future<Output = CR<T>>,
{
    if vms.len() == 1 {
        let vm = vms.into_iter().next().expect("one VM");
        return Ok(vec![op(vm).await?]);
    }
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for vm in vms {
        let uuid = vm.uuid();
        match op(vm).await {
            Ok(t) => done.push(t),
            Err(e) => failed.push((uuid, describe(ctx, e))),
        }
    }
    if failed.is_empty() {
        Ok(done)
    } else {
        // The reference prepends each failure to its list.
        failed.reverse();
        Err(CliError::Multiple(failed))
    }
}

async fn vm_call(ctx: &Arc<Ctx>, sref: &str, method: &str, vm: &str, extra: Vec<V>) -> CR<V> {
    let mut args = vec![sv(sref), sv(vm)];
    args.extend(extra);
    call(ctx, method, args).await
}

async fn uuid_of(ctx: &Arc<Ctx>, sref: &str, vm: &str) -> CR<String> {
    let u = vm_call(ctx, sref, "VM.get_uuid", vm, vec![]).await?;
    Ok(u.as_str().unwrap_or("").to_string())
}

/// Runs VM command `name`; `None` if it is not one of these.
pub async fn exec(
    ctx: &Arc<Ctx>,
    sref: &str,
    name: &str,
    cl: &CommandLine,
    p: &mut Printer,
    out: &mut Vec<Command>,
    client: &mut Client<'_>,
) -> Option<CR<()>> {
    let res = match name {
        "vm-start" => start(ctx, sref, cl).await,
        "vm-suspend" => simple(ctx, sref, cl, &PLAIN, "VM.suspend").await,
        "vm-resume" => resume(ctx, sref, cl).await,
        "vm-shutdown" | "vm-reboot" | "vm-pause" | "vm-unpause" => {
            let force = cl.get_bool("force");
            let method = match (name, force) {
                ("vm-shutdown", false) => "VM.clean_shutdown",
                ("vm-shutdown", true) => "VM.hard_shutdown",
                ("vm-reboot", false) => "VM.clean_reboot",
                ("vm-reboot", true) => "VM.hard_reboot",
                ("vm-pause", _) => "VM.pause",
                _ => "VM.unpause",
            };
            let how = Selecting {
                ignore: if name == "vm-shutdown" {
                    &["progress"]
                } else {
                    &[]
                },
                ..PLAIN
            };
            simple(ctx, sref, cl, &how, method).await
        }
        "vm-vcpu-hotplug" => {
            let n = cl.get("new-vcpus").unwrap_or_default();
            match n.trim().parse::<i64>() {
                Ok(n) => {
                    let how = Selecting {
                        ignore: &["new-vcpus"],
                        ..PLAIN
                    };
                    simple_with(
                        ctx,
                        sref,
                        cl,
                        &how,
                        "VM.set_VCPUs_number_live",
                        vec![V::I(n)],
                    )
                    .await
                }
                Err(_) => Err(failure(format!("int_of_string: {n}"))),
            }
        }
        "vm-memory-dynamic-range-set" => {
            let range = bytes_of_string("min", cl.get("min").unwrap_or_default()).and_then(|min| {
                Ok((
                    min,
                    bytes_of_string("max", cl.get("max").unwrap_or_default())?,
                ))
            });
            match range {
                Ok((min, max)) => {
                    let how = Selecting {
                        ignore: &["min", "max"],
                        ..PLAIN
                    };
                    let args = vec![V::I(min), V::I(max)];
                    simple_with(ctx, sref, cl, &how, "VM.set_memory_dynamic_range", args).await
                }
                Err(e) => Err(e),
            }
        }
        "vm-destroy" => destroy(ctx, sref, cl).await,
        "vm-clone" | "vm-copy" => clone_or_copy(ctx, sref, cl, name == "vm-copy", p, out).await,
        "vm-install" => install(ctx, sref, cl, p, out).await,
        "vm-uninstall" => uninstall(ctx, sref, cl, out, client).await,
        _ => return None,
    };
    Some(res)
}

async fn simple(
    ctx: &Arc<Ctx>,
    sref: &str,
    cl: &CommandLine,
    how: &Selecting,
    method: &str,
) -> CR<()> {
    simple_with(ctx, sref, cl, how, method, vec![]).await
}

/// `method` on each selected VM with the arguments `extra` after it.
async fn simple_with(
    ctx: &Arc<Ctx>,
    sref: &str,
    cl: &CommandLine,
    how: &Selecting,
    method: &str,
    extra: Vec<V>,
) -> CR<()> {
    let vms = select(ctx, sref, cl, how).await?;
    each(ctx, vms, |vm| {
        let extra = extra.clone();
        async move { vm_call(ctx, sref, method, &vm.r, extra).await.map(|_| ()) }
    })
    .await?;
    Ok(())
}

async fn start(ctx: &Arc<Ctx>, sref: &str, cl: &CommandLine) -> CR<()> {
    let how = Selecting {
        control_domains: true,
        ignore: &["on", "paused", "progress"],
        ..PLAIN
    };
    let paused = V::B(cl.get_bool("paused"));
    let force = V::B(cl.get_bool("force"));
    let host = match cl.get("on") {
        None => None,
        Some(h) => Some(host_by_name_or_uuid(ctx, sref, h).await?),
    };
    let vms = select(ctx, sref, cl, &how).await?;
    each(ctx, vms, |vm| {
        let (paused, force, host) = (paused.clone(), force.clone(), host.clone());
        async move {
            match host {
                Some(h) => {
                    vm_call(ctx, sref, "VM.start_on", &vm.r, vec![sv(&h), paused, force]).await
                }
                None => vm_call(ctx, sref, "VM.start", &vm.r, vec![paused, force]).await,
            }
            .map(|_| ())
        }
    })
    .await?;
    Ok(())
}

/// `vm-resume [on=HOST] [--force]`: VM.resume, or VM.resume_on a host.
async fn resume(ctx: &Arc<Ctx>, sref: &str, cl: &CommandLine) -> CR<()> {
    let how = Selecting {
        ignore: &["on", "progress"],
        ..PLAIN
    };
    let force = V::B(cl.get_bool("force"));
    let host = match cl.get("on") {
        None => None,
        Some(h) => Some(host_by_name_or_uuid(ctx, sref, h).await?),
    };
    let vms = select(ctx, sref, cl, &how).await?;
    each(ctx, vms, |vm| {
        let (force, host) = (force.clone(), host.clone());
        async move {
            let paused = V::B(false);
            match host {
                Some(h) => {
                    vm_call(
                        ctx,
                        sref,
                        "VM.resume_on",
                        &vm.r,
                        vec![sv(&h), paused, force],
                    )
                    .await
                }
                None => vm_call(ctx, sref, "VM.resume", &vm.r, vec![paused, force]).await,
            }
            .map(|_| ())
        }
    })
    .await?;
    Ok(())
}

/// `get_host_by_name_or_id`: a host whose uuid, name-label or hostname is `h`.
async fn host_by_name_or_uuid(ctx: &Arc<Ctx>, sref: &str, h: &str) -> CR<String> {
    let hosts = call(ctx, "host.get_all_records", vec![sv(sref)]).await?;
    let found = match hosts {
        V::M(m) => m.into_iter().find(|(_, rec)| {
            ["uuid", "name_label", "hostname"]
                .iter()
                .any(|k| get(rec, k).and_then(V::as_str) == Some(h))
        }),
        _ => None,
    };
    found
        .map(|(r, _)| r)
        .ok_or_else(|| failure(format!("Host {h} not found")))
}

async fn destroy(ctx: &Arc<Ctx>, sref: &str, cl: &CommandLine) -> CR<()> {
    let (r, rec) = by_uuid(ctx, sref, "VM", cl.get("uuid").unwrap_or("")).await?;
    if rec.get("is_control_domain") == Some(&V::B(true)) {
        return Err(CliError::Api(vec![
            ErrorCode::OperationNotAllowed.code().to_string(),
            "You cannot destroy a control domain via the CLI".into(),
        ]));
    }
    vm_call(ctx, sref, "VM.destroy", &r, vec![]).await?;
    Ok(())
}

async fn clone_or_copy(
    ctx: &Arc<Ctx>,
    sref: &str,
    cl: &CommandLine,
    copy: bool,
    p: &mut Printer,
    out: &mut Vec<Command>,
) -> CR<()> {
    let new_name = cl.get("new-name-label").unwrap_or("").to_string();
    let how = Selecting {
        templates: true,
        multiple: !copy,
        ignore: if copy {
            &["new-name-label", "sr-uuid", "new-name-description"]
        } else {
            &["new-name-label", "new-name-description", "ignore-vdi-uuids"]
        },
        ..PLAIN
    };
    let sr = match cl.get("sr-uuid").filter(|_| copy) {
        Some(u) => by_uuid(ctx, sref, "SR", u).await?.0,
        None => model::value::NULL_REF.to_string(),
    };
    let vms = select(ctx, sref, cl, &how).await?;
    let new = each(ctx, vms, |vm| {
        let (new_name, sr) = (new_name.clone(), sr.clone());
        async move {
            let v = if copy {
                vm_call(ctx, sref, "VM.copy", &vm.r, vec![sv(&new_name), sv(&sr)]).await?
            } else {
                vm_call(ctx, sref, "VM.clone", &vm.r, vec![sv(&new_name)]).await?
            };
            Ok(v.as_str().unwrap_or("").to_string())
        }
    })
    .await?;
    if let (Some(desc), Some(first)) = (cl.get("new-name-description"), new.first()) {
        vm_call(ctx, sref, "VM.set_name_description", first, vec![sv(desc)]).await?;
    }
    let mut uuids = Vec::new();
    for r in &new {
        uuids.push(uuid_of(ctx, sref, r).await?);
    }
    out.extend(p.print(PrintVal::List(uuids)));
    Ok(())
}

/// The template `vm-install` names: `template-uuid=`, `template-name=` /
/// `template-name-label=`, or `template=` (a uuid, else a name).
async fn find_template(ctx: &Arc<Ctx>, sref: &str, cl: &CommandLine) -> CR<String> {
    let get_by_uuid = |u: String| async move {
        call(ctx, "VM.get_by_uuid", vec![sv(sref), sv(&u)])
            .await
            .map(|v| v.as_str().unwrap_or("").to_string())
    };
    let by_name = |name: String| async move {
        let recs = call(ctx, "VM.get_all_records", vec![sv(sref)]).await?;
        let found: Vec<String> = match recs {
            V::M(m) => m
                .into_iter()
                .filter(|(_, rec)| {
                    get(rec, "is_a_template") == Some(&V::B(true))
                        && get(rec, "is_control_domain") != Some(&V::B(true))
                        && get(rec, "name_label").and_then(V::as_str) == Some(name.as_str())
                })
                .map(|(r, _)| r)
                .collect(),
            _ => vec![],
        };
        match found.len() {
            0 => Err(failure("No templates matched")),
            1 => Ok(found.into_iter().next().unwrap_or_default()),
            _ => Err(failure("More than one matching template found")),
        }
    };
    if let Some(u) = cl.get("template-uuid") {
        return get_by_uuid(u.to_string())
            .await
            .map_err(|_| failure("Cannot find template"));
    }
    if let Some(n) = cl.get("template-name-label").or(cl.get("template-name")) {
        return by_name(n.to_string()).await;
    }
    if let Some(t) = cl.get("template") {
        return match get_by_uuid(t.to_string()).await {
            Ok(r) => Ok(r),
            Err(_) => by_name(t.to_string()).await,
        };
    }
    Err(failure(
        "Template must be specified by parameter 'template-uuid', 'template-name', 'template-name-label' or 'template'",
    ))
}

/// `vm-install`: a clone of the template (a copy where an SR is named),
/// described as installed by xe, then provisioned; prints the new uuid.
/// The new VM is destroyed again if anything after the clone fails.
async fn install(
    ctx: &Arc<Ctx>,
    sref: &str,
    cl: &CommandLine,
    p: &mut Printer,
    out: &mut Vec<Command>,
) -> CR<()> {
    let template = find_template(ctx, sref, cl).await?;
    let is_template = vm_call(ctx, sref, "VM.get_is_a_template", &template, vec![]).await?;
    if is_template != V::B(true) {
        return Err(failure("Can only install from templates"));
    }
    let name = cl.get("new-name-label").unwrap_or("").to_string();
    let mut sr = match cl.get("sr-uuid") {
        Some(u) => Some(by_uuid(ctx, sref, "SR", u).await?.0),
        None => None,
    };
    if let Some(label) = cl.get("sr-name-label") {
        let v = call(ctx, "SR.get_by_name_label", vec![sv(sref), sv(label)]).await?;
        let srs: Vec<String> = match v {
            V::A(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        };
        sr =
            match (srs.as_slice(), sr) {
                ([], _) => return Err(failure("No SR with that name-label found")),
                (l, Some(s)) if l.contains(&s) => Some(s),
                (_, Some(_)) => return Err(failure(
                    "SR specified via sr-uuid doesn't have the name specified via sr-name-label",
                )),
                ([one], None) => Some(one.clone()),
                (_, None) => return Err(failure("Multiple SRs with that name-label found")),
            };
    }
    if sr.is_none() && !has_default_sr(ctx, sref).await? {
        let oc = vm_call(ctx, sref, "VM.get_other_config", &template, vec![]).await?;
        if matches!(&oc, V::M(m) if m.contains_key("disks")) {
            return Err(failure(
                "Failed to find a valid default SR for the Pool. Please provide an sr-name-label or sr-uuid parameter.",
            ));
        }
    }
    let new = match &sr {
        Some(s) => vm_call(ctx, sref, "VM.copy", &template, vec![sv(&name), sv(s)]).await?,
        None => vm_call(ctx, sref, "VM.clone", &template, vec![sv(&name)]).await?,
    };
    let new = new.as_str().unwrap_or("").to_string();
    let provisioned = async {
        vm_call(
            ctx,
            sref,
            "VM.set_name_description",
            &new,
            vec![sv("Installed via xe CLI")],
        )
        .await?;
        let sr_uuid = match &sr {
            Some(s) => call(ctx, "SR.get_uuid", vec![sv(sref), sv(s)])
                .await?
                .as_str()
                .unwrap_or_default()
                .to_string(),
            None => default_sr_uuid(ctx, sref).await?.unwrap_or_default(),
        };
        rewrite_disks_sr(ctx, sref, &new, &sr_uuid).await?;
        vm_call(ctx, sref, "VM.provision", &new, vec![]).await?;
        uuid_of(ctx, sref, &new).await
    }
    .await;
    match provisioned {
        Ok(uuid) => {
            out.extend(p.print(PrintVal::List(vec![uuid])));
            Ok(())
        }
        Err(e) => {
            let _ = vm_call(ctx, sref, "VM.destroy", &new, vec![]).await;
            Err(e)
        }
    }
}

/// Whether the pool's default SR names an SR that exists.
async fn has_default_sr(ctx: &Arc<Ctx>, sref: &str) -> CR<bool> {
    Ok(default_sr_uuid(ctx, sref).await?.is_some())
}

/// The uuid of the pool's default SR, if it names one that exists.
async fn default_sr_uuid(ctx: &Arc<Ctx>, sref: &str) -> CR<Option<String>> {
    let pools = call(ctx, "pool.get_all_records", vec![sv(sref)]).await?;
    let Some(sr) = (match pools {
        V::M(m) => m.into_values().next().and_then(|p| {
            get(&p, "default_SR")
                .and_then(V::as_str)
                .map(str::to_string)
        }),
        _ => None,
    }) else {
        return Ok(None);
    };
    Ok(call(ctx, "SR.get_uuid", vec![sv(sref), sv(&sr)])
        .await
        .ok()
        .and_then(|u| u.as_str().map(str::to_string)))
}

/// The reference's `rewrite_provisioning_xml`: the new VM's disks go on
/// the SR `sr_uuid` (the one named, else the pool's default).
async fn rewrite_disks_sr(ctx: &Arc<Ctx>, sref: &str, vm: &str, sr_uuid: &str) -> CR<()> {
    let oc = vm_call(ctx, sref, "VM.get_other_config", vm, vec![]).await?;
    let Some(disks) = (match &oc {
        V::M(m) => m.get("disks").and_then(V::as_str).map(str::to_string),
        _ => None,
    }) else {
        return Ok(());
    };
    let new = crate::api::vm::provision::rewrite_sr(&disks, sr_uuid)
        .map_err(|e| CliError::Failure(format!("XML error: {e}")))?;
    vm_call(
        ctx,
        sref,
        "VM.remove_from_other_config",
        vm,
        vec![sv("disks")],
    )
    .await?;
    vm_call(
        ctx,
        sref,
        "VM.add_to_other_config",
        vm,
        vec![sv("disks"), sv(&new)],
    )
    .await?;
    Ok(())
}

/// `vm-uninstall`: lists the VM (and its snapshots) with the disks it owns
/// (VBDs whose other-config has `owner`), then destroys them, shutting a
/// VM down hard first; without `--force` only once the user types yes.
async fn uninstall(
    ctx: &Arc<Ctx>,
    sref: &str,
    cl: &CommandLine,
    out: &mut Vec<Command>,
    client: &mut Client<'_>,
) -> CR<()> {
    let vms = select(ctx, sref, cl, &PLAIN).await?;
    let mut all: Vec<String> = vms.iter().map(|v| v.r.clone()).collect();
    for v in &vms {
        if let Some(V::A(snaps)) = v.rec.get("snapshots") {
            all.extend(snaps.iter().filter_map(|s| s.as_str().map(str::to_string)));
        }
    }
    let mut lines = Vec::new();
    let mut plan: Vec<(String, Vec<String>)> = Vec::new();
    for vm in &all {
        let rec = match vm_call(ctx, sref, "VM.get_record", vm, vec![]).await? {
            V::M(m) => m,
            _ => continue,
        };
        let text = |k: &str| rec.get(k).and_then(V::as_str).unwrap_or("").to_string();
        lines.push(format!("VM : {} ({})", text("uuid"), text("name_label")));
        let mut vdis = Vec::new();
        if let Some(V::A(vbds)) = rec.get("VBDs") {
            for b in vbds.iter().filter_map(V::as_str) {
                let Ok(V::M(vbd)) = call(ctx, "VBD.get_record", vec![sv(sref), sv(b)]).await else {
                    continue;
                };
                let owned =
                    matches!(vbd.get("other_config"), Some(V::M(oc)) if oc.contains_key("owner"));
                let vdi = vbd.get("VDI").and_then(V::as_str).unwrap_or("");
                let Ok(V::M(vr)) = call(ctx, "VDI.get_record", vec![sv(sref), sv(vdi)]).await
                else {
                    continue;
                };
                if owned {
                    let t = |k: &str| vr.get(k).and_then(V::as_str).unwrap_or("").to_string();
                    let shared = matches!(vr.get("VBDs"), Some(V::A(a)) if a.len() > 1);
                    lines.push(format!(
                        "VDI: {} ({}) {}",
                        t("uuid"),
                        t("name_label"),
                        if shared {
                            " ** WARNING: disk is shared by other VMs"
                        } else {
                            ""
                        }
                    ));
                    vdis.push(vdi.to_string());
                }
            }
        }
        plan.push((vm.clone(), vdis));
    }
    out.push(Command::Print(
        "The following items are about to be destroyed".into(),
    ));
    out.extend(lines.into_iter().map(Command::Print));
    if !cl.get_bool("force") && !client.user_says_yes(out).await? {
        return Ok(());
    }
    for (vm, vdis) in plan {
        let state = vm_call(ctx, sref, "VM.get_power_state", &vm, vec![]).await?;
        if state.as_str() != Some("Halted") {
            vm_call(ctx, sref, "VM.hard_shutdown", &vm, vec![]).await?;
        }
        vm_call(ctx, sref, "VM.destroy", &vm, vec![]).await?;
        for vdi in vdis {
            call(ctx, "VDI.destroy", vec![sv(sref), sv(&vdi)]).await?;
        }
    }
    out.push(Command::Print("All objects destroyed".into()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bytes_of_string;

    #[test]
    fn sizes_parse_as_the_reference_reads_them() {
        let b = |s: &str| bytes_of_string("f", s).ok();
        assert_eq!(b("512"), Some(512));
        assert_eq!(b("128MiB"), Some(128 << 20));
        assert_eq!(b("1 GiB"), Some(1 << 30));
        assert_eq!(b("2k"), Some(2048));
        assert_eq!(b("3TB"), Some(3 << 40));
        assert_eq!(b("7 bytes"), Some(7));
        for bad in ["", "x", "1x", "-1", "1 PiB", "99999999999999TiB"] {
            assert_eq!(b(bad), None, "{bad}");
        }
    }
}
