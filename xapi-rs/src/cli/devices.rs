//! The `xe` device commands of `cli_operations.ml`: create, destroy, plug
//! and unplug of VBDs and VIFs, create and destroy of VDIs and networks,
//! with the reference's parameters, defaults, messages and output (the new
//! object's uuid, or nothing).

use super::{by_uuid, call, sv, CliError, CmdSpec, CR};
use crate::model::value::V;
use crate::rpc::Ctx;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xe::args::CommandLine;
use xe::protocol::Command;
use xe::render::{PrintVal, Printer};

fn spec(name: &str, reqd: &[&str], optn: &[&str], help: &str) -> CmdSpec {
    CmdSpec {
        name: name.into(),
        reqd: super::s(reqd),
        optn: super::s(optn),
        help: help.into(),
        standard: false,
        vm_selectors: false,
    }
}

/// The commands, with the reference's parameters and help text.
pub fn commands() -> Vec<CmdSpec> {
    vec![
        spec(
            "vbd-create",
            &["vm-uuid", "device"],
            &["vdi-uuid", "bootable", "type", "mode", "unpluggable"],
            "Create a VBD. Appropriate values for the device field are listed in the parameter 'allowed-VBD-devices' on the VM. If no VDI is specified, an empty VBD will be created. The type parameter can be 'Disk', 'CD' or 'Floppy', and the mode is 'RO' or 'RW'.",
        ),
        spec("vbd-destroy", &["uuid"], &[], "Destroy a VBD."),
        spec(
            "vbd-plug",
            &["uuid"],
            &[],
            "Attempt to attach the VBD while the VM is in the running state.",
        ),
        spec(
            "vbd-unplug",
            &["uuid"],
            &["timeout", "force"],
            "Attempt to detach the VBD while the VM is in the running state. If the optional argument 'timeout=N' is given then the command will wait for up to 'N' seconds for the unplug to complete. If the optional argument 'force' is given then it will be immediately unplugged.",
        ),
        spec(
            "vif-create",
            &["device", "network-uuid", "vm-uuid"],
            &["mac"],
            "Create a VIF. Appropriate values for the device are listed in the parameter 'allowed-VIF-devices' on the VM. If specified, the MAC parameter is of the form aa:bb:cc:dd:ee:ff. If MAC is not specified the server will choose an appropriate MAC automatically.",
        ),
        spec("vif-destroy", &["uuid"], &[], "Destroy a VIF."),
        spec(
            "vif-plug",
            &["uuid"],
            &[],
            "Attempt to attach the VIF while the VM is in the running state.",
        ),
        spec(
            "vif-unplug",
            &["uuid"],
            &["force"],
            "Attempt to detach the VIF while the VM is in the running state.",
        ),
        spec(
            "vdi-create",
            &["sr-uuid", "name-label", "virtual-size"],
            &["sm-config:", "sharable", "tags:", "type"],
            "Create a VDI. Type is 'system' 'user' 'suspend' or 'crashdump'.",
        ),
        spec("vdi-destroy", &["uuid"], &[], "Destroy a VDI."),
        spec(
            "network-create",
            &["name-label"],
            &["name-description", "MTU", "bridge", "managed"],
            "Create a new network.",
        ),
        spec("network-destroy", &["uuid"], &[], "Delete an existing network."),
    ]
}

fn cli_failure(m: impl Into<String>) -> CliError {
    CliError::Cli(m.into())
}

/// `get_bool_param`: the reference's `Record_util.bool_of_string`.
fn bool_param(cl: &CommandLine, name: &str, default: bool) -> CR<bool> {
    let Some(v) = cl.get(name) else {
        return Ok(default);
    };
    match v.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Ok(true),
        "false" | "f" | "no" | "n" | "0" => Ok(false),
        _ => Err(cli_failure(format!(
            "Failed to parse parameter '{name}': Expected 'true','t','yes','y','1','false','f','no','n','0' got {v}"
        ))),
    }
}

fn param<'a>(cl: &'a CommandLine, name: &str) -> &'a str {
    cl.get(name).unwrap_or_default()
}

async fn ref_of(ctx: &Arc<Ctx>, sref: &str, class: &str, uuid: &str) -> CR<String> {
    Ok(by_uuid(ctx, sref, class, uuid).await?.0)
}

/// Prints the uuid of the new object `r` of `class`.
async fn print_uuid(
    ctx: &Arc<Ctx>,
    sref: &str,
    class: &str,
    r: &V,
    p: &mut Printer,
    out: &mut Vec<Command>,
) -> CR<()> {
    let uuid = call(ctx, &format!("{class}.get_uuid"), vec![sv(sref), r.clone()]).await?;
    out.extend(p.print(PrintVal::List(vec![
        uuid.as_str().unwrap_or_default().to_string(),
    ])));
    Ok(())
}

fn map(pairs: Vec<(String, String)>) -> V {
    V::M(pairs.into_iter().map(|(k, v)| (k, V::S(v))).collect())
}

/// Runs device command `name`; `None` if it is not one of these.
pub async fn exec(
    ctx: &Arc<Ctx>,
    sref: &str,
    name: &str,
    cl: &CommandLine,
    p: &mut Printer,
    out: &mut Vec<Command>,
) -> Option<CR<()>> {
    let res = match name {
        "vbd-create" => vbd_create(ctx, sref, cl, p, out).await,
        "vif-create" => vif_create(ctx, sref, cl, p, out).await,
        "vdi-create" => vdi_create(ctx, sref, cl, p, out).await,
        "network-create" => network_create(ctx, sref, cl, p, out).await,
        "vbd-unplug" => vbd_unplug(ctx, sref, cl).await,
        "vif-unplug" => match bool_param(cl, "force", false) {
            Ok(force) => {
                let m = if force {
                    "VIF.unplug_force"
                } else {
                    "VIF.unplug"
                };
                on_uuid(ctx, sref, cl, "VIF", m).await
            }
            Err(e) => Err(e),
        },
        "vbd-destroy" => on_uuid(ctx, sref, cl, "VBD", "VBD.destroy").await,
        "vbd-plug" => on_uuid(ctx, sref, cl, "VBD", "VBD.plug").await,
        "vif-destroy" => on_uuid(ctx, sref, cl, "VIF", "VIF.destroy").await,
        "vif-plug" => on_uuid(ctx, sref, cl, "VIF", "VIF.plug").await,
        "vdi-destroy" => on_uuid(ctx, sref, cl, "VDI", "VDI.destroy").await,
        "network-destroy" => on_uuid(ctx, sref, cl, "network", "network.destroy").await,
        _ => return None,
    };
    Some(res)
}

/// `method` on the object of `class` named by `uuid=`; prints nothing.
async fn on_uuid(
    ctx: &Arc<Ctx>,
    sref: &str,
    cl: &CommandLine,
    class: &str,
    method: &str,
) -> CR<()> {
    let r = ref_of(ctx, sref, class, param(cl, "uuid")).await?;
    call(ctx, method, vec![sv(sref), sv(&r)]).await?;
    Ok(())
}

async fn vbd_create(
    ctx: &Arc<Ctx>,
    sref: &str,
    cl: &CommandLine,
    p: &mut Printer,
    out: &mut Vec<Command>,
) -> CR<()> {
    let vm = ref_of(ctx, sref, "VM", param(cl, "vm-uuid")).await?;
    let empty = cl.get("vdi-uuid").is_none();
    let vdi = match cl.get("vdi-uuid") {
        None => "OpaqueRef:NULL".to_string(),
        Some(u) => ref_of(ctx, sref, "VDI", u).await?,
    };
    let bootable = bool_param(cl, "bootable", false)?;
    let mode = match cl.get("mode").map(str::to_ascii_lowercase).as_deref() {
        None | Some("rw") => "RW",
        Some("ro") => "RO",
        Some(_) => {
            return Err(cli_failure(format!(
                "Unknown mode: {} (should be \"ro\" or \"rw\"",
                param(cl, "mode")
            )))
        }
    };
    let type_ = match cl.get("type").map(str::to_ascii_lowercase).as_deref() {
        None | Some("disk") => "Disk",
        Some("cd") => "CD",
        Some("floppy") => "Floppy",
        Some(_) => {
            return Err(cli_failure(format!(
                "\"Unknown type: {} (should be \"cd\", \"disk\" or \"floppy\"",
                param(cl, "type")
            )))
        }
    };
    let unpluggable = bool_param(cl, "unpluggable", true)?;
    if type_ == "Disk" && empty {
        return Err(cli_failure("Empty VBDs can only be made for type=CD"));
    }
    let rec = V::M(
        [
            ("VM", sv(&vm)),
            ("VDI", sv(&vdi)),
            ("userdevice", sv(param(cl, "device"))),
            ("bootable", V::B(bootable)),
            ("mode", sv(mode)),
            ("type", sv(type_)),
            ("unpluggable", V::B(unpluggable)),
            ("empty", V::B(empty)),
            ("qos_algorithm_type", sv("")),
            ("qos_algorithm_params", map(vec![])),
            ("other_config", map(vec![])),
            ("device", sv("")),
            ("currently_attached", V::B(false)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    let r = call(ctx, "VBD.create", vec![sv(sref), rec]).await?;
    print_uuid(ctx, sref, "VBD", &r, p, out).await
}

/// The reference's `vbd-unplug`: a rejected unplug is looked at again
/// every 5 s until `timeout` seconds have passed, then reported.
async fn vbd_unplug(ctx: &Arc<Ctx>, sref: &str, cl: &CommandLine) -> CR<()> {
    let timeout = match cl.get("timeout") {
        None => 0.0,
        Some(t) => t
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(|| cli_failure("Failed to parse parameter 'timeout': expecting a float"))?,
    };
    let force = bool_param(cl, "force", false)?;
    let r = ref_of(ctx, sref, "VBD", param(cl, "uuid")).await?;
    let start = Instant::now();
    let method = if force {
        "VBD.unplug_force"
    } else {
        "VBD.unplug"
    };
    match call(ctx, method, vec![sv(sref), sv(&r)]).await {
        Ok(_) => Ok(()),
        Err(CliError::Api(e))
            if e.first().map(String::as_str) == Some("DEVICE_DETACH_REJECTED") =>
        {
            let limit = Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
            while start.elapsed() < limit {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let attached =
                    call(ctx, "VBD.get_currently_attached", vec![sv(sref), sv(&r)]).await?;
                if attached == V::B(false) {
                    return Ok(());
                }
            }
            Err(CliError::Api(e))
        }
        Err(e) => Err(e),
    }
}

async fn vif_create(
    ctx: &Arc<Ctx>,
    sref: &str,
    cl: &CommandLine,
    p: &mut Printer,
    out: &mut Vec<Command>,
) -> CR<()> {
    let net = ref_of(ctx, sref, "network", param(cl, "network-uuid")).await?;
    let vm = ref_of(ctx, sref, "VM", param(cl, "vm-uuid")).await?;
    let mac = match param(cl, "mac") {
        "random" => crate::api::vm::random_mac(),
        m => m.to_string(),
    };
    let mtu = call(ctx, "network.get_MTU", vec![sv(sref), sv(&net)]).await?;
    let rec = V::M(
        [
            ("device", sv(param(cl, "device"))),
            ("network", sv(&net)),
            ("VM", sv(&vm)),
            ("MAC", sv(&mac)),
            ("MTU", mtu),
            ("other_config", map(vec![])),
            ("currently_attached", V::B(false)),
            ("qos_algorithm_type", sv("")),
            ("qos_algorithm_params", map(vec![])),
            ("locking_mode", sv("network_default")),
            ("ipv4_allowed", V::A(vec![])),
            ("ipv6_allowed", V::A(vec![])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    let r = call(ctx, "VIF.create", vec![sv(sref), rec]).await?;
    print_uuid(ctx, sref, "VIF", &r, p, out).await
}

async fn vdi_create(
    ctx: &Arc<Ctx>,
    sref: &str,
    cl: &CommandLine,
    p: &mut Printer,
    out: &mut Vec<Command>,
) -> CR<()> {
    let sr = ref_of(ctx, sref, "SR", param(cl, "sr-uuid")).await?;
    let size = super::vm::bytes_of_string("virtual-size", param(cl, "virtual-size"))?;
    let type_ = match cl.get("type") {
        None => "user",
        Some(t @ ("system" | "user" | "suspend" | "crashdump")) => t,
        Some(t) => return Err(cli_failure(format!("Unknown vdi type: {t}"))),
    };
    let sharable = bool_param(cl, "sharable", false)?;
    let tags: Vec<V> = cl
        .map_params("tags")
        .into_iter()
        .map(|(k, _)| V::S(k))
        .collect();
    let rec = V::M(
        [
            ("name_label", sv(param(cl, "name-label"))),
            ("name_description", sv("")),
            ("SR", sv(&sr)),
            ("virtual_size", V::I(size)),
            ("type", sv(type_)),
            ("sharable", V::B(sharable)),
            ("read_only", V::B(false)),
            ("xenstore_data", map(vec![])),
            ("other_config", map(vec![])),
            ("sm_config", map(cl.map_params("sm-config"))),
            ("tags", V::A(tags)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    let r = call(ctx, "VDI.create", vec![sv(sref), rec]).await?;
    print_uuid(ctx, sref, "VDI", &r, p, out).await
}

async fn network_create(
    ctx: &Arc<Ctx>,
    sref: &str,
    cl: &CommandLine,
    p: &mut Printer,
    out: &mut Vec<Command>,
) -> CR<()> {
    let mtu = match cl.get("MTU") {
        None => 1500,
        Some(m) => m
            .parse::<i64>()
            .map_err(|_| CliError::Failure("int_of_string".into()))?,
    };
    let managed = bool_param(cl, "managed", true)?;
    let rec = V::M(
        [
            ("name_label", sv(param(cl, "name-label"))),
            ("name_description", sv(param(cl, "name-description"))),
            ("MTU", V::I(mtu)),
            ("other_config", map(vec![])),
            ("bridge", sv(param(cl, "bridge"))),
            ("managed", V::B(managed)),
            ("tags", V::A(vec![])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    let r = call(ctx, "network.create", vec![sv(sref), rec]).await?;
    print_uuid(ctx, sref, "network", &r, p, out).await
}
