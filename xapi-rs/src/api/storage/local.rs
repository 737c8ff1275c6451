//! The local file SR a host gets on its first start, as the reference's
//! installer makes "Local storage": an SR of type `file` in
//! `<state directory>/sr/<sr-uuid>` with this host's PBD, its SM record,
//! and the pool's default, suspend-image and crash-dump SR pointing at it
//! where they point nowhere yet. Later starts find it again (by its
//! `other_config:i18n-key`) and refresh its sizes.

use super::FILE_SR_TYPE;
use crate::db::{Db, DbError};
use crate::generated::records::{Host, Pbd, Pool, Sm, Sr, StorageOperations};
use crate::model::typed::{Object, Ref};
use crate::model::value::V;
use crate::rpc::{new_ref, new_uuid};
use sm::file::FileSr;
use std::collections::BTreeMap;
use std::path::Path;

/// The key and value the reference marks its local SR with.
const I18N_KEY: (&str, &str) = ("i18n-key", "local-storage");

fn create<T: Object>(db: &Db, r: &Ref<T>, t: T, uuid: &str) -> Result<(), DbError> {
    let mut rec = t.to_record();
    rec.insert("uuid".into(), V::S(uuid.to_string()));
    db.create(T::CLASS, r.as_str(), rec).map(|_| ())
}

/// Creates or refreshes the local SR of `host` under `root`.
pub fn ensure(db: &Db, host: &Ref<Host>, pool: &Ref<Pool>, root: &Path) -> Result<Ref<Sr>, String> {
    let e = |e: DbError| e.to_string();
    let mine = db.all_typed::<Sr>().into_iter().find(|(_, sr)| {
        sr.other_config.get(I18N_KEY.0).map(String::as_str) == Some(I18N_KEY.1)
            && sr
                .PBDs
                .iter()
                .any(|p| db.get_typed(p).is_some_and(|p: Pbd| p.host == *host))
    });
    let sr_ref = match mine {
        Some((r, sr)) => {
            // Its directory again (a state directory restored elsewhere).
            for p in &sr.PBDs {
                if let Some(pbd) = db.get_typed::<Pbd>(p) {
                    if let Some(dir) = pbd.device_config.get("location") {
                        FileSr::open(Path::new(dir)).map_err(|e| e.to_string())?;
                    }
                    if !pbd.currently_attached {
                        db.update_typed(p, |x| x.currently_attached = true)
                            .map_err(e)?;
                    }
                }
            }
            r
        }
        None => {
            if !db
                .all_typed::<Sm>()
                .iter()
                .any(|(_, s)| s.type_ == FILE_SR_TYPE)
            {
                let sm = Sm {
                    name_label: "Local file SR".into(),
                    name_description: "SR of raw image files in a local directory".into(),
                    type_: FILE_SR_TYPE.into(),
                    vendor: "xapi-rs".into(),
                    copyright: "xapi-rs".into(),
                    version: "1.0".into(),
                    required_api_version: "1.0".into(),
                    capabilities: ["SR_PROBE", "VDI_CREATE", "VDI_DELETE"]
                        .map(String::from)
                        .to_vec(),
                    features: [("SR_PROBE", 1), ("VDI_CREATE", 1), ("VDI_DELETE", 1)]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    configuration: BTreeMap::from([(
                        "location".to_string(),
                        "local directory path (required)".to_string(),
                    )]),
                    ..Sm::default()
                };
                create(db, &Ref::<Sm>::new(new_ref()), sm, &new_uuid()).map_err(e)?;
            }
            let uuid = new_uuid();
            let dir = root.join("sr").join(&uuid);
            FileSr::open(&dir).map_err(|e| e.to_string())?;
            let sr_ref = Ref::<Sr>::new(new_ref());
            let sr = Sr {
                name_label: "Local storage".into(),
                type_: FILE_SR_TYPE.into(),
                content_type: "user".into(),
                shared: false,
                other_config: BTreeMap::from([
                    (I18N_KEY.0.to_string(), I18N_KEY.1.to_string()),
                    (
                        "i18n-original-value-name_label".to_string(),
                        "Local storage".to_string(),
                    ),
                ]),
                allowed_operations: vec![
                    StorageOperations::VdiCreate,
                    StorageOperations::VdiDestroy,
                    StorageOperations::Scan,
                ],
                ..Sr::default()
            };
            create(db, &sr_ref, sr, &uuid).map_err(e)?;
            let pbd = Pbd {
                host: host.clone(),
                SR: sr_ref.clone(),
                device_config: BTreeMap::from([(
                    "location".to_string(),
                    dir.display().to_string(),
                )]),
                currently_attached: true,
                ..Pbd::default()
            };
            create(db, &Ref::<Pbd>::new(new_ref()), pbd, &new_uuid()).map_err(e)?;
            tracing::info!(sr = %sr_ref, dir = %dir.display(), "local storage created");
            sr_ref
        }
    };
    refresh_sizes(db, host, &sr_ref)?;
    if let Some(p) = db.get_typed::<Pool>(pool) {
        if p.default_SR.is_null() || p.suspend_image_SR.is_null() || p.crash_dump_SR.is_null() {
            db.update_typed(pool, |p| {
                for f in [
                    &mut p.default_SR,
                    &mut p.suspend_image_SR,
                    &mut p.crash_dump_SR,
                ] {
                    if f.is_null() {
                        *f = sr_ref.clone();
                    }
                }
            })
            .map_err(e)?;
        }
    }
    if let Some(h) = db.get_typed::<Host>(host) {
        if h.suspend_image_sr.is_null() || h.crash_dump_sr.is_null() {
            db.update_typed(host, |h| {
                for f in [&mut h.suspend_image_sr, &mut h.crash_dump_sr] {
                    if f.is_null() {
                        *f = sr_ref.clone();
                    }
                }
            })
            .map_err(e)?;
        }
    }
    Ok(sr_ref)
}

/// The SR's filesystem size and use, and the sum of its VDIs' sizes.
pub fn refresh_sizes(db: &Db, host: &Ref<Host>, r: &Ref<Sr>) -> Result<(), String> {
    let Some(sr) = db.get_typed::<Sr>(r) else {
        return Ok(());
    };
    let dir = sr
        .PBDs
        .iter()
        .filter_map(|p| db.get_typed::<Pbd>(p))
        .find(|p| p.host == *host)
        .and_then(|p| p.device_config.get("location").cloned());
    let Some(dir) = dir else { return Ok(()) };
    let space = FileSr::open(Path::new(&dir))
        .and_then(|s| s.space())
        .map_err(|e| e.to_string())?;
    let allocation: i64 = sr
        .VDIs
        .iter()
        .filter_map(|v| db.get_typed::<crate::generated::records::Vdi>(v))
        .map(|v| v.virtual_size)
        .sum();
    let (size, used) = (
        space.physical_size as i64,
        space.physical_utilisation as i64,
    );
    if (
        sr.physical_size,
        sr.physical_utilisation,
        sr.virtual_allocation,
    ) != (size, used, allocation)
    {
        db.update_typed(r, |s| {
            s.physical_size = size;
            s.physical_utilisation = used;
            s.virtual_allocation = allocation;
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}
