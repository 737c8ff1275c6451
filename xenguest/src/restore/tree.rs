//! The xl/libxl domain configuration carried in an `xl save` header, and
//! the xenstore tree libxl writes for a PV guest with a console.

use serde_json::Value;

/// What restore takes from the saved domain configuration (libxl's
/// `libxl_domain_config` as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedConfig {
    pub name: Option<String>,
    pub uuid: Option<[u8; 16]>,
    pub max_vcpus: Option<u32>,
    pub max_memkb: Option<u64>,
    pub target_memkb: Option<u64>,
    pub video_memkb: Option<u64>,
    /// The whole document, for libxl's userdata file.
    pub json: Option<Value>,
}

/// Parses a textual UUID (`xxxxxxxx-xxxx-...`).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(u)
}

/// Formats a UUID the way libxl does.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// A random (version 4) UUID.
pub fn random_uuid() -> [u8; 16] {
    use std::io::Read;
    let mut u = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut u))
        .is_ok();
    if !ok {
        // Fall back to time and pid: unique enough for a handle.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        u[..8].copy_from_slice(&(t as u64).to_le_bytes());
        u[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

impl SavedConfig {
    /// Reads the fields restore needs; unknown or odd fields are ignored
    /// (the config is advisory: options and the stream decide).
    pub fn from_json(text: &str) -> Result<SavedConfig, String> {
        let v: Value = serde_json::from_str(text.trim_end_matches('\0'))
            .map_err(|e| format!("xl header config is not valid JSON: {e}"))?;
        let c = &v["c_info"];
        let b = &v["b_info"];
        let num = |x: &Value| x.as_u64().filter(|&n| n > 0 && n != u64::MAX);
        let max_vcpus = num(&b["max_vcpus"]).map(|n| n.min(u32::MAX as u64) as u32);
        Ok(SavedConfig {
            name: c["name"].as_str().map(str::to_string),
            uuid: c["uuid"].as_str().and_then(parse_uuid),
            max_vcpus,
            max_memkb: num(&b["max_memkb"]),
            target_memkb: num(&b["target_memkb"]),
            video_memkb: b["video_memkb"].as_u64().filter(|&n| n != u64::MAX),
            json: Some(v),
        })
    }

    /// The document to store as libxl's `libxl-json` userdata, with the
    /// restored domain's name, UUID and memory.
    pub fn userdata_json(
        &self,
        name: &str,
        uuid: &[u8; 16],
        max_kib: u64,
        target_kib: u64,
    ) -> String {
        let mut v = self.json.clone().unwrap_or_else(|| {
            serde_json::json!({
                "c_info": {"type": "pv"},
                "b_info": {"type.pv": {}},
            })
        });
        if !v["c_info"].is_object() {
            v["c_info"] = serde_json::json!({});
        }
        v["c_info"]["name"] = Value::from(name);
        v["c_info"]["uuid"] = Value::from(format_uuid(uuid));
        if !v["b_info"].is_object() {
            v["b_info"] = serde_json::json!({});
        }
        v["b_info"]["max_memkb"] = Value::from(max_kib);
        v["b_info"]["target_memkb"] = Value::from(target_kib);
        serde_json::to_string_pretty(&v).expect("a JSON value serialises")
    }
}

/// Who may access a node: `n0 rD` style lists (first entry = owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perms {
    /// Owned by dom0, nobody else (`n0`).
    Dom0Only,
    /// Owned by dom0, readable by the guest (`n0 rD`).
    GuestRead,
    /// Owned by the guest (`nD`).
    GuestOwned,
    /// Owned by the guest, readable by dom0 (`nD r0`).
    GuestOwnedDom0Read,
}

/// One node to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    pub value: String,
    pub perms: Perms,
}

/// Everything the tree needs.
#[derive(Debug, Clone)]
pub struct TreeParams {
    pub domid: u32,
    pub name: String,
    pub uuid: [u8; 16],
    pub max_memkb: u64,
    pub target_memkb: u64,
    pub video_memkb: u64,
    pub vcpus: u32,
    pub online_vcpus: Vec<bool>,
    pub store_port: u32,
    pub store_mfn: u64,
    pub console_port: u32,
    pub console_mfn: u64,
    pub start_time: String,
}

/// The top-level paths restore creates (what to remove on failure).
pub fn tree_roots(domid: u32, uuid: &[u8; 16]) -> Vec<String> {
    vec![
        format!("/local/domain/{domid}"),
        format!("/vm/{}", format_uuid(uuid)),
        format!("/libxl/{domid}"),
        format!("/local/domain/0/backend/console/{domid}"),
    ]
}

/// The nodes libxl writes for a PV domain with a xenconsoled console
/// (`libxl__domain_make`, `libxl__build_post`, `libxl__device_console_add`).
pub fn domain_tree(p: &TreeParams) -> Vec<Node> {
    let d = format!("/local/domain/{}", p.domid);
    let uuid = format_uuid(&p.uuid);
    let vm = format!("/vm/{uuid}");
    let lx = format!("/libxl/{}", p.domid);
    let back = format!("/local/domain/0/backend/console/{}/0", p.domid);
    let mut v = Vec::new();
    let mut n = |path: String, value: &str, perms: Perms| {
        v.push(Node {
            path,
            value: value.to_string(),
            perms,
        })
    };
    use Perms::*;
    n(d.clone(), "", GuestRead);
    n(vm.clone(), "", GuestRead);
    n(lx.clone(), "", Dom0Only);
    n(format!("{vm}/uuid"), &uuid, GuestRead);
    n(format!("{vm}/name"), &p.name, GuestRead);
    n(format!("{vm}/start_time"), &p.start_time, GuestRead);
    n(format!("{vm}/image/ostype"), "linux", GuestRead);
    n(format!("{d}/vm"), &vm, GuestRead);
    n(format!("{d}/name"), &p.name, GuestRead);
    n(format!("{lx}/type"), "pv", Dom0Only);
    n(format!("{d}/control"), "", GuestRead);
    n(
        format!("{d}/control/platform-feature-multiprocessor-suspend"),
        "1",
        GuestRead,
    );
    n(
        format!("{d}/control/platform-feature-xs_reset_watches"),
        "1",
        GuestRead,
    );
    for f in [
        "shutdown",
        "feature-poweroff",
        "feature-reboot",
        "feature-suspend",
        "sysrq",
    ] {
        n(format!("{d}/control/{f}"), "", GuestOwned);
    }
    n(format!("{d}/device"), "", GuestRead);
    n(format!("{d}/device/suspend/event-channel"), "", GuestOwned);
    for f in ["data", "drivers", "feature", "attr", "error"] {
        n(format!("{d}/{f}"), "", GuestOwned);
    }
    n(format!("{d}/memory"), "", GuestRead);
    n(
        format!("{d}/memory/static-max"),
        &p.max_memkb.to_string(),
        GuestRead,
    );
    n(
        format!("{d}/memory/target"),
        &p.target_memkb.to_string(),
        GuestRead,
    );
    n(
        format!("{d}/memory/videoram"),
        &p.video_memkb.to_string(),
        GuestRead,
    );
    n(format!("{d}/domid"), &p.domid.to_string(), GuestRead);
    n(
        format!("{d}/store/port"),
        &p.store_port.to_string(),
        GuestRead,
    );
    n(
        format!("{d}/store/ring-ref"),
        &p.store_mfn.to_string(),
        GuestRead,
    );
    for i in 0..p.vcpus {
        let online = p.online_vcpus.get(i as usize).copied().unwrap_or(false);
        n(
            format!("{d}/cpu/{i}/availability"),
            if online { "online" } else { "offline" },
            GuestRead,
        );
    }
    // The primary console: frontend in the domain's console/ directory,
    // backend served by xenconsoled in dom0 (permissions as libxl sets them).
    let c = format!("{d}/console");
    n(c.clone(), "", GuestRead);
    n(format!("{c}/backend"), &back, GuestRead);
    n(format!("{c}/backend-id"), "0", GuestOwnedDom0Read);
    n(format!("{c}/limit"), "1048576", GuestRead);
    n(format!("{c}/type"), "xenconsoled", GuestRead);
    n(format!("{c}/output"), "pty", GuestRead);
    n(format!("{c}/tty"), "", GuestRead);
    n(format!("{c}/port"), &p.console_port.to_string(), GuestRead);
    n(
        format!("{c}/ring-ref"),
        &p.console_mfn.to_string(),
        GuestRead,
    );
    let back_dom = format!("/local/domain/0/backend/console/{}", p.domid);
    n(back_dom, "", Dom0Only);
    n(back.clone(), "", GuestRead);
    for (k, val) in [
        ("frontend", c.as_str()),
        ("frontend-id", &p.domid.to_string()),
        ("online", "1"),
        ("state", "1"),
        ("protocol", "vt100"),
    ] {
        n(format!("{back}/{k}"), val, GuestRead);
    }
    let lc = format!("{lx}/device/console/0");
    for (k, val) in [
        ("backend", back.as_str()),
        ("frontend", c.as_str()),
        ("frontend-id", &p.domid.to_string()),
        ("online", "1"),
        ("state", "1"),
        ("protocol", "vt100"),
    ] {
        n(format!("{lc}/{k}"), val, Dom0Only);
    }
    n(format!("{lx}/dm-version"), "qemu_xen", Dom0Only);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_round_trip() {
        let s = "5c4bb9b3-6a7e-4e3b-9f4a-0123456789ab";
        let u = parse_uuid(s).unwrap();
        assert_eq!(format_uuid(&u), s);
        assert!(parse_uuid("nope").is_none());
        let r = random_uuid();
        assert_eq!(r[6] >> 4, 4);
        assert_ne!(r, random_uuid());
    }

    #[test]
    fn config_fields() {
        let j = r#"{"c_info":{"type":"pv","name":"probe","uuid":"5c4bb9b3-6a7e-4e3b-9f4a-0123456789ab"},
                   "b_info":{"max_vcpus":2,"max_memkb":262144,"target_memkb":262144,"video_memkb":-1}}"#;
        let c = SavedConfig::from_json(j).unwrap();
        assert_eq!(c.name.as_deref(), Some("probe"));
        assert_eq!(c.max_vcpus, Some(2));
        assert_eq!(c.max_memkb, Some(262144));
        assert_eq!(c.video_memkb, None);
        assert!(c.uuid.is_some());
        let u = c.userdata_json("new", &[1; 16], 100, 90);
        let v: Value = serde_json::from_str(&u).unwrap();
        assert_eq!(v["c_info"]["name"], "new");
        assert_eq!(v["c_info"]["type"], "pv");
        assert_eq!(v["b_info"]["target_memkb"], 90);
        assert!(SavedConfig::from_json("{").is_err());
        assert_eq!(SavedConfig::from_json("{}\0").unwrap().name, None);
    }

    #[test]
    fn tree_has_what_xenconsoled_and_xl_need() {
        let p = TreeParams {
            domid: 7,
            name: "g".into(),
            uuid: [0xab; 16],
            max_memkb: 262144,
            target_memkb: 262144,
            video_memkb: 0,
            vcpus: 2,
            online_vcpus: vec![true],
            store_port: 1,
            store_mfn: 0x1234,
            console_port: 2,
            console_mfn: 0x5678,
            start_time: "1.00".into(),
        };
        let t = domain_tree(&p);
        let get = |k: &str| t.iter().find(|n| n.path == k).map(|n| n.value.as_str());
        assert_eq!(get("/local/domain/7/name"), Some("g"));
        assert_eq!(get("/local/domain/7/console/ring-ref"), Some("22136"));
        assert_eq!(get("/local/domain/7/console/type"), Some("xenconsoled"));
        assert_eq!(get("/local/domain/7/store/ring-ref"), Some("4660"));
        assert_eq!(get("/local/domain/7/cpu/1/availability"), Some("offline"));
        assert_eq!(
            get("/local/domain/7/vm"),
            Some("/vm/abababab-abab-abab-abab-abababababab")
        );
        let roots = tree_roots(7, &[0xab; 16]);
        for n in &t {
            assert!(
                roots.iter().any(|r| n.path.starts_with(r.as_str())),
                "{}",
                n.path
            );
        }
    }
}
