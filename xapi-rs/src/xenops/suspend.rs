//! Suspend to an image file and resume from it: the domain's memory goes
//! through the hypervisor's save/restore engine (xenguest), the rest
//! (xenstore tree, devices, introduction) is the same as for a build.

use std::path::Path;

use xenctrl::DomId;

use super::error::{Result, XenopsError};
use super::hypervisor::Hypervisor;
use super::service::Xenops;
use super::spec::DomainSpec;
use super::tree;

impl<H: Hypervisor> Xenops<H> {
    /// Suspends domain `domid` into `image` (an existing file, written in
    /// place) and destroys it with its devices. If the image cannot be
    /// written the guest runs on, as before, and the error says why.
    pub async fn suspend(&self, domid: DomId, image: &Path) -> Result<()> {
        let uuid = self.ensure_ours(domid).await?;
        let path = image.to_path_buf();
        self.image_step(domid, move |h| h.save(domid, &path))
            .await?;
        tracing::info!(domid, %uuid, image = %image.display(), "domain suspended");
        // The image is safe and the guest stopped for good: the VM is
        // suspended even if its remains cannot all be cleared now.
        if let Err(e) = self.teardown(domid, &uuid).await {
            tracing::error!(domid, error = %e, "suspended domain not fully torn down");
        }
        Ok(())
    }

    /// A domain for `spec` from the image [`Xenops::suspend`] wrote, with
    /// its tree, devices and introduction as at a build; left paused (see
    /// [`Xenops::unpause`]). On failure no domain is left.
    pub async fn resume(&self, spec: &DomainSpec, image: &Path) -> Result<DomId> {
        spec.validate()?;
        self.check_bridges(spec).await?;
        let (path, s) = (image.to_path_buf(), spec.clone());
        let (domid, rings) = self.image_step(0, move |h| h.restore(&path, &s)).await?;
        tracing::info!(domid, uuid = %spec.uuid, image = %image.display(), "domain restored");
        let res = async {
            // The tree a build writes, marked as building until unpaused.
            tree::write(&self.xs, &tree::created(domid, spec))
                .await
                .map_err(Self::xs_err("write the domain's xenstore tree", domid))?;
            let target = spec.memory.target_kib;
            self.blocking("set the memory cap", Some(domid), move |h| {
                h.set_memory_cap(domid, target)
            })
            .await?;
            self.finish_build(domid, spec, &rings).await
        }
        .await;
        self.destroy_on_error(domid, spec, res)
            .await
            .map(|()| domid)
    }

    /// Runs a save or restore off the runtime (it takes seconds).
    async fn image_step<T: Send + 'static>(
        &self,
        domid: DomId,
        f: impl FnOnce(&H) -> std::result::Result<T, super::hypervisor::ImageError> + Send + 'static,
    ) -> Result<T> {
        let hv = self.hv.clone();
        tokio::task::spawn_blocking(move || f(&hv))
            .await
            .map_err(|e| XenopsError::Join {
                step: "save or restore",
                reason: e.to_string(),
            })?
            .map_err(|e| XenopsError::Image { domid, reason: e.0 })
    }
}
