//! `VM.provision`: a template's disks from its `other_config:disks`
//! (`<provision><disk device= size= sr= bootable= [type=]/></provision>`),
//! each a new VDI on the SR named by uuid and a VBD of the new VM, as the
//! reference's template provisioner makes them. Unlike the reference, a
//! failure half-way (a bad SR, a full disk) removes the disks already made
//! and leaves the template as it was.

use super::{get_vm, power_state_in, put_vm};
use crate::api::storage;
use crate::generated::errors;
use crate::generated::records::{Sr, Vbd, VbdMode, VbdType, Vdi, VdiType, Vm, VmPowerState};
use crate::model::typed::{Object, Ref};
use crate::rpc::{new_ref, new_uuid, void, ApiError, BoxFut, Ctx, Req, R};
use quick_xml::events::{BytesStart, Event};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One `<disk>` of a provision record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionDisk {
    /// The VBD's userdevice (`0`, or `autodetect`).
    pub device: String,
    /// The VDI's size in bytes.
    pub size: i64,
    /// The SR's uuid (the CLI fills it in).
    pub sr: String,
    /// The VBD is bootable.
    pub bootable: bool,
    /// The VDI's type (`system` when absent or unknown, as the reference).
    pub type_: VdiType,
}

/// A document of the provision format: the root's name and attributes,
/// and each child element's name and attributes in order.
type Doc = (
    String,
    Vec<(String, String)>,
    Vec<(String, Vec<(String, String)>)>,
);

/// The reference's error for a record that parses as XML but is not a
/// provision record.
fn parse_failure() -> ApiError {
    errors::internal_error("Xapi_templates.Parse_failure")
}

fn attrs(e: &BytesStart) -> Result<Vec<(String, String)>, String> {
    let mut out = vec![];
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let v = a.unescape_value().map_err(|e| e.to_string())?;
        out.push((
            String::from_utf8_lossy(a.key.as_ref()).into_owned(),
            v.into_owned(),
        ));
    }
    Ok(out)
}

/// Reads the two-level document; `Err` is the XML error's text. Text that
/// is not blank, or a third level, is a structure error (`Ok(None)`).
fn read_doc(xml: &str) -> Result<Option<Doc>, String> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut root: Option<(String, Vec<(String, String)>)> = None;
    let mut kids = vec![];
    let mut depth = 0usize;
    let mut closed = false;
    loop {
        let ev = r.read_event().map_err(|e| e.to_string())?;
        match ev {
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
            Event::Text(_) | Event::CData(_) => return Ok(None),
            _ if closed => return Ok(None),
            Event::Start(e) | Event::Empty(e) if depth > 1 => {
                let _ = e;
                return Ok(None);
            }
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if depth == 0 {
                    root = Some((name, attrs(&e)?));
                } else {
                    kids.push((name, attrs(&e)?));
                }
                depth += 1;
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if depth == 0 {
                    root = Some((name, attrs(&e)?));
                    closed = true;
                } else {
                    kids.push((name, attrs(&e)?));
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    closed = true;
                }
            }
        }
    }
    if !closed {
        return Err("unexpected end of input".into());
    }
    Ok(root.map(|(n, a)| (n, a, kids)))
}

/// The disks of a provision record, or the reference's error.
pub fn parse_disks(xml: &str) -> R<Vec<ProvisionDisk>> {
    let doc = read_doc(xml).map_err(|e| errors::internal_error(&format!("XML Error: {e}")))?;
    let Some((root, root_attrs, kids)) = doc else {
        return Err(parse_failure());
    };
    if root != "provision" || !root_attrs.is_empty() {
        return Err(parse_failure());
    }
    kids.into_iter()
        .map(|(name, a)| {
            if name != "disk" {
                return Err(parse_failure());
            }
            let get = |k: &str| {
                a.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(parse_failure)
            };
            let type_ = match a.iter().find(|(n, _)| n == "type").map(|(_, v)| v.as_str()) {
                Some("user") => VdiType::User,
                Some("ephemeral") => VdiType::Ephemeral,
                Some("suspend") => VdiType::Suspend,
                Some("crashdump") => VdiType::Crashdump,
                _ => VdiType::System,
            };
            Ok(ProvisionDisk {
                device: get("device")?,
                size: get("size")?.trim().parse().map_err(|_| parse_failure())?,
                sr: get("sr")?,
                bootable: get("bootable")? == "true",
                type_,
            })
        })
        .collect()
}

fn escape(v: &str) -> String {
    quick_xml::escape::escape(v).into_owned()
}

/// The CLI's `rewrite_provisioning_xml`: every disk's `sr` attribute set
/// to `sr_uuid` (none added where a disk has none), written compactly.
/// `Err` is the XML error's text.
pub fn rewrite_sr(xml: &str, sr_uuid: &str) -> Result<String, String> {
    let Some((root, root_attrs, kids)) = read_doc(xml)? else {
        return Ok(xml.to_string());
    };
    let el = |name: &str, a: &[(String, String)], close: bool| {
        let mut s = format!("<{name}");
        for (k, v) in a {
            s.push_str(&format!(" {k}=\"{}\"", escape(v)));
        }
        s.push_str(if close { "/>" } else { ">" });
        s
    };
    if kids.is_empty() {
        return Ok(el(&root, &root_attrs, true));
    }
    let mut out = el(&root, &root_attrs, false);
    for (name, mut a) in kids {
        if name == "disk" {
            for (k, v) in a.iter_mut() {
                if k == "sr" {
                    *v = sr_uuid.to_string();
                }
            }
        }
        out.push_str(&el(&name, &a, true));
    }
    out.push_str(&format!("</{root}>"));
    Ok(out)
}

/// `VM.provision`.
pub fn provision(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let r: Ref<Vm> = q.get(0);
    Box::pin(async move {
        let r2 = r.clone();
        let srs: Vec<(Ref<Sr>, String)> = ctx
            .db
            .all_typed::<Sr>()
            .into_iter()
            .map(|(r, s)| (r, s.uuid))
            .collect();
        // Checked and parsed before anything changes.
        let (vm, disks) = ctx
            .db
            .transaction_async(move |tx| {
                let vm = get_vm(tx, &r2)?;
                power_state_in(&r2, &vm, &[VmPowerState::Halted])?;
                if !vm.is_a_template {
                    return Err(errors::only_provision_template());
                }
                if vm.other_config.contains_key("postinstall") {
                    return Err(errors::operation_not_allowed(
                        "post-install scripts (other_config:postinstall) are not supported",
                    ));
                }
                let disks = match vm.other_config.get("disks") {
                    Some(x) => parse_disks(x)?,
                    None => vec![],
                };
                let mut on = vec![];
                for d in &disks {
                    let sr = srs
                        .iter()
                        .find(|(r, u)| *u == d.sr && tx.exists(Sr::CLASS, r.as_str()))
                        .map(|(sr, _)| sr.clone())
                        .ok_or_else(|| errors::uuid_invalid("sr", &d.sr))?;
                    on.push(sr);
                }
                Ok((vm, disks.into_iter().zip(on).collect::<Vec<_>>()))
            })
            .await?;
        let mut made: Vec<Ref<Vdi>> = vec![];
        let mut vbds: Vec<Ref<Vbd>> = vec![];
        let res: R<()> = async {
            for (d, sr) in &disks {
                let vdi = Vdi {
                    name_label: String::new(),
                    name_description: "Created by template provisioner".into(),
                    SR: sr.clone(),
                    virtual_size: d.size,
                    type_: d.type_,
                    sm_config: BTreeMap::from([("vmhint".to_string(), vm.uuid.clone())]),
                    ..Vdi::default()
                };
                let v = storage::create_vdi(&ctx, vdi).await?;
                made.push(v.clone());
                let (vm_ref, d2) = (r.clone(), d.clone());
                let b = ctx
                    .db
                    .transaction_async(move |tx| {
                        let vm = get_vm(tx, &vm_ref)?;
                        let device = if d2.device == "autodetect" {
                            super::checks::allowed_devices(&vm.to_record(), false, |c, r| {
                                tx.get(c, r)
                            })
                            .into_iter()
                            .next()
                            .ok_or_else(|| {
                                errors::operation_not_allowed("the VM has no free device slot")
                            })?
                        } else {
                            d2.device.clone()
                        };
                        let b = Ref::<Vbd>::new(new_ref());
                        let vbd = Vbd {
                            uuid: new_uuid(),
                            VM: vm_ref.clone(),
                            VDI: v.clone(),
                            userdevice: device.clone(),
                            bootable: d2.bootable,
                            mode: VbdMode::Rw,
                            type_: VbdType::Disk,
                            unpluggable: d2.type_ != VdiType::System,
                            empty: false,
                            other_config: BTreeMap::from([("owner".to_string(), String::new())]),
                            ..Vbd::default()
                        };
                        tx.create(Vbd::CLASS, b.as_str(), vbd.to_record())?;
                        // The VDI is named after its slot, as the reference does.
                        if let Some(mut x) = storage::get::<Vdi>(tx, &v) {
                            x.name_label = device;
                            tx.create(Vdi::CLASS, v.as_str(), x.to_record())?;
                        }
                        Ok::<_, ApiError>(b)
                    })
                    .await?;
                vbds.push(b);
            }
            let r2 = r.clone();
            ctx.db
                .transaction_async(move |tx| {
                    let mut vm = get_vm(tx, &r2)?;
                    vm.is_a_template = false;
                    vm.other_config.remove("disks");
                    vm.other_config.remove("postinstall");
                    put_vm(tx, &r2, &mut vm)
                })
                .await
        }
        .await;
        if let Err(e) = res {
            for b in vbds {
                let _ = ctx
                    .db
                    .transaction_async(move |tx| {
                        tx.delete(Vbd::CLASS, b.as_str())?;
                        Ok::<_, ApiError>(())
                    })
                    .await;
            }
            for v in made {
                if let Err(c) = storage::destroy_vdi(&ctx, &v).await {
                    tracing::warn!(vdi = %v, "provision cleanup: {c:?}");
                }
            }
            return Err(e);
        }
        Ok(void())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_s_provision_records_parse() {
        let d = parse_disks(
            r#"<provision><disk device="0" size="8589934592" sr="" bootable="true" type="system"/><disk device="1" size="1024" sr="u" bootable="false"/></provision>"#,
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].device.as_str(), d[0].size, d[0].bootable, d[0].type_),
            ("0", 8589934592, true, VdiType::System)
        );
        assert_eq!((d[1].sr.as_str(), d[1].bootable), ("u", false));
        assert_eq!(parse_disks("<provision/>").unwrap(), vec![]);
        let code = |x: &str| parse_disks(x).unwrap_err().0[1..].to_vec();
        assert_eq!(
            code("<provision a=\"1\"/>"),
            ["Xapi_templates.Parse_failure"]
        );
        assert_eq!(
            code(r#"<provision><disk device="0" size="x" sr="" bootable="true"/></provision>"#),
            ["Xapi_templates.Parse_failure"]
        );
        assert_eq!(
            code(r#"<provision><disk size="1" sr="" bootable="true"/></provision>"#),
            ["Xapi_templates.Parse_failure"]
        );
        assert_eq!(code("<other/>"), ["Xapi_templates.Parse_failure"]);
        assert!(code("<provision><disk")
            .remove(0)
            .starts_with("XML Error: "));
    }

    #[test]
    fn the_cli_rewrites_each_disk_s_sr() {
        assert_eq!(
            rewrite_sr(
                r#"<provision><disk device="0" size="8" sr="" bootable="true" type="system"/></provision>"#,
                "U"
            )
            .unwrap(),
            r#"<provision><disk device="0" size="8" sr="U" bootable="true" type="system"/></provision>"#
        );
        assert_eq!(rewrite_sr("<provision/>", "U").unwrap(), "<provision/>");
        assert!(rewrite_sr("<provision><disk", "U").is_err());
    }
}
