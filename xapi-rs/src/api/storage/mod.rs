//! `SR`, `PBD`, `VDI`: the local file SR every host gets on first start
//! ([`local`]), and its VDIs as sparse raw images created and removed by
//! the SR driver ([`sm::file::FileSr`]). A VDI's record exists only while
//! its image does: `VDI.create` makes the file first, `VDI.destroy`
//! removes it first, and a failure in between leaves neither behind.

pub mod local;

use crate::db::Tx;
use crate::generated::errors;
use crate::generated::records::{Host, Pbd, Sr, Vbd, Vdi};
use crate::model::typed::{Object, Ref};
use crate::model::value::V;
use crate::model::Msg;
use crate::rpc::{new_ref, new_uuid, void, BoxFut, Ctx, Impl, Req, R};
use sm::file::FileSr;
use std::path::PathBuf;
use std::sync::Arc;

pub const HANDLERS: &[(Msg, Impl)] = &[
    (Msg::VdiCreate, Impl::Custom(vdi_create)),
    (Msg::VdiDestroy, Impl::Custom(vdi_destroy)),
];

/// The SR type of [`FileSr`] (the reference's name for a directory of
/// image files).
pub const FILE_SR_TYPE: &str = "file";

pub(crate) fn get<T: Object>(tx: &Tx, r: &Ref<T>) -> Option<T> {
    tx.get(T::CLASS, r.as_str()).map(|rec| T::from_record(&rec))
}

fn require<T: Object>(tx: &Tx, r: &Ref<T>) -> R<T> {
    get(tx, r).ok_or_else(|| errors::handle_invalid(T::CLASS, r.as_str()))
}

/// The directory of file SR `sr` on `host`: its PBD's
/// `device_config:location`. SRs of other types are not served yet.
pub(crate) fn sr_dir(tx: &Tx, sr_ref: &Ref<Sr>, sr: &Sr, host: &Ref<Host>) -> R<PathBuf> {
    if sr.type_ != FILE_SR_TYPE {
        return Err(errors::operation_not_allowed(&format!(
            "SR {sr_ref} is of type {:?}: only {FILE_SR_TYPE:?} SRs have a driver yet",
            sr.type_
        )));
    }
    sr.PBDs
        .iter()
        .filter_map(|p| get::<Pbd>(tx, p))
        .find(|p| p.host == *host && p.currently_attached)
        .and_then(|p| p.device_config.get("location").cloned())
        .map(PathBuf::from)
        .ok_or_else(|| errors::sr_has_no_pbds(sr_ref.as_str()))
}

/// The image of VDI `vdi` for a guest on `host`.
pub(crate) fn vdi_image(tx: &Tx, r: &Ref<Vdi>, vdi: &Vdi, host: &Ref<Host>) -> R<PathBuf> {
    let sr = require(tx, &vdi.SR)?;
    let dir = sr_dir(tx, &vdi.SR, &sr, host)?;
    FileSr::open(&dir)
        .and_then(|s| s.image(&vdi.uuid))
        .map_err(|e| errors::internal_error(&format!("VDI {r}: {e}")))
}

fn sm_error(e: sm::SmError) -> crate::rpc::ApiError {
    match e {
        sm::SmError::NoSpace { wanted, free } => {
            errors::sr_full(&wanted.to_string(), &free.to_string())
        }
        e => errors::internal_error(&e.to_string()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> sm::Result<T> + Send + 'static) -> R<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| errors::internal_error(&e.to_string()))?
        .map_err(sm_error)
}

/// VDI.create: the image first (sparse, `virtual_size` bytes), then the
/// record; the image goes again if the record cannot be written.
fn vdi_create(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let rec = match q.args.first() {
        Some(V::M(m)) => m.clone(),
        _ => Default::default(),
    };
    Box::pin(async move {
        let r = create_vdi(&ctx, Vdi::from_record(&rec)).await?;
        Ok(V::S(r.as_str().to_string()))
    })
}

/// Makes the VDI `vdi` describes (its SR, size, names, type, ...): the
/// image, then the record.
pub(crate) async fn create_vdi(ctx: &Arc<Ctx>, mut vdi: Vdi) -> R<Ref<Vdi>> {
    {
        if vdi.virtual_size <= 0 {
            return Err(errors::invalid_value(
                "virtual_size",
                &vdi.virtual_size.to_string(),
            ));
        }
        let host: Ref<Host> = Ref::new(ctx.host_ref.clone());
        let sr_ref = vdi.SR.clone();
        let (dir, h) = (sr_ref.clone(), host.clone());
        let dir = ctx
            .db
            .transaction_async(move |tx| {
                let sr = require(tx, &dir)?;
                sr_dir(tx, &dir, &sr, &h)
            })
            .await?;
        vdi.uuid = new_uuid();
        let (uuid, size) = (vdi.uuid.clone(), vdi.virtual_size as u64);
        let sr_dir = dir.clone();
        blocking(move || FileSr::open(&sr_dir)?.create(&uuid, size).map(|_| ())).await?;
        // As the reference's drivers: the location is the uuid, nothing
        // is in use yet, and the SR's driver manages it.
        vdi.location = vdi.uuid.clone();
        vdi.physical_utilisation = 0;
        vdi.managed = true;
        vdi.missing = false;
        vdi.VBDs.clear();
        vdi.current_operations.clear();
        let r = Ref::<Vdi>::new(new_ref());
        let (r2, v2) = (r.clone(), vdi.clone());
        let res = ctx
            .db
            .transaction_async(move |tx| {
                require::<Sr>(tx, &v2.SR)?;
                tx.create(Vdi::CLASS, r2.as_str(), v2.to_record())?;
                Ok::<_, crate::rpc::ApiError>(())
            })
            .await;
        if let Err(e) = res {
            let uuid = vdi.uuid.clone();
            let _ = blocking(move || FileSr::open(&dir)?.destroy(&uuid)).await;
            return Err(e);
        }
        Ok(r)
    }
}

/// VDI.destroy: refused while a VBD has it attached; otherwise the image
/// goes, then the record with the (unplugged) VBDs that named it.
fn vdi_destroy(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let r: Ref<Vdi> = q.get(0);
    Box::pin(async move {
        destroy_vdi(&ctx, &r).await?;
        Ok(void())
    })
}

/// Removes VDI `r`: its image, then its record and its (unplugged) VBDs.
pub(crate) async fn destroy_vdi(ctx: &Arc<Ctx>, r: &Ref<Vdi>) -> R<()> {
    let r = r.clone();
    {
        let host: Ref<Host> = Ref::new(ctx.host_ref.clone());
        let r2 = r.clone();
        let (vdi, image) = ctx
            .db
            .transaction_async(move |tx| {
                let vdi = require(tx, &r2)?;
                let attached = vdi
                    .VBDs
                    .iter()
                    .filter_map(|b| get::<Vbd>(tx, b))
                    .any(|b| b.currently_attached);
                if attached {
                    return Err(errors::vdi_in_use(r2.as_str(), "destroy"));
                }
                let image = vdi_image(tx, &r2, &vdi, &host)?;
                Ok::<_, crate::rpc::ApiError>((vdi, image))
            })
            .await?;
        match tokio::task::spawn_blocking(move || std::fs::remove_file(&image))
            .await
            .map_err(|e| errors::internal_error(&e.to_string()))?
        {
            Ok(()) => {}
            // Gone already (removed by hand): the record goes all the same.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(errors::internal_error(&format!("VDI {r}: {e}"))),
        }
        let r2 = r.clone();
        ctx.db
            .transaction_async(move |tx| {
                for b in &vdi.VBDs {
                    if tx.exists(Vbd::CLASS, b.as_str()) {
                        tx.delete(Vbd::CLASS, b.as_str())?;
                    }
                }
                tx.delete(Vdi::CLASS, r2.as_str())?;
                Ok::<_, crate::rpc::ApiError>(())
            })
            .await?;
        Ok(())
    }
}
