//! `@releaseDomain` to lifecycle events. xenstored fires that watch when
//! an introduced domain shuts down and again when it dies (and once when
//! the watch is set); an event only says "go and look", so each one
//! triggers a rescan of Xen's domain list, compared with the last one.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;
use xenctrl::{DomId, ShutdownReason};

use super::error::{Result, XenopsError};
use super::hypervisor::{DomainState, Hypervisor, Power};
use super::tree;

/// Something that happened to one of our domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainEvent {
    /// It shut down (the guest asked, crashed, or a watchdog fired); it
    /// stays until destroyed.
    Shutdown {
        /// The domain.
        domid: DomId,
        /// Its VM.
        uuid: Uuid,
        /// Why.
        reason: ShutdownReason,
    },
    /// It no longer exists.
    Gone {
        /// The domain.
        domid: DomId,
        /// Its VM.
        uuid: Uuid,
    },
}

/// How often the tracker looks at Xen's domains without a watch event.
const RESCAN: std::time::Duration = std::time::Duration::from_secs(5);

/// A stream of [`DomainEvent`]s for domains carrying our marker; the
/// background task stops when this is dropped.
pub struct Tracker {
    rx: mpsc::Receiver<Result<DomainEvent>>,
}

impl Tracker {
    /// The next event; `None` once the xenstore connection is gone.
    pub async fn next(&mut self) -> Option<Result<DomainEvent>> {
        self.rx.recv().await
    }

    /// Sets the watch, takes the first scan as the baseline (a domain
    /// already shut down is reported once), then reports changes.
    pub(crate) async fn start<H: Hypervisor>(
        hv: Arc<H>,
        xs: xenstore::Xenstore,
    ) -> Result<Tracker> {
        let mut watch =
            xs.watch("@releaseDomain")
                .await
                .map_err(|source| XenopsError::Xenstore {
                    step: "watch @releaseDomain",
                    domid: 0,
                    source,
                })?;
        // New domains are learnt when xenstored is told of them, so one
        // destroyed behind our back later (xl destroy) is reported gone.
        let mut introduced =
            xs.watch("@introduceDomain")
                .await
                .map_err(|source| XenopsError::Xenstore {
                    step: "watch @introduceDomain",
                    domid: 0,
                    source,
                })?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            // domid -> (uuid, last power); only domains with our marker.
            let mut known: HashMap<DomId, (Uuid, Power)> = HashMap::new();
            loop {
                let fired = tokio::select! {
                    ev = watch.next() => ev.is_some(),
                    ev = introduced.next() => ev.is_some(),
                    // Also look every few seconds: a shutdown whose watch
                    // event never arrived (a dom0 test under load waited a
                    // minute for one once) is still reported, a little later.
                    () = tokio::time::sleep(RESCAN) => true,
                    // The Tracker was dropped: stop (and unwatch) now.
                    () = tx.closed() => false,
                };
                if !fired {
                    return;
                }
                let events = match scan(&hv, &xs, &mut known).await {
                    Ok(ev) => ev,
                    Err(e) => vec![Err(e)],
                };
                for ev in events {
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Tracker { rx })
    }
}

/// One rescan: updates `known` and returns what changed.
async fn scan<H: Hypervisor>(
    hv: &Arc<H>,
    xs: &xenstore::Xenstore,
    known: &mut HashMap<DomId, (Uuid, Power)>,
) -> Result<Vec<Result<DomainEvent>>> {
    let h = hv.clone();
    let now: Vec<DomainState> = tokio::task::spawn_blocking(move || h.domains())
        .await
        .map_err(|e| XenopsError::Join {
            step: "list domains",
            reason: e.to_string(),
        })?
        .map_err(|source| XenopsError::Xen {
            step: "list domains",
            domid: None,
            source,
        })?;
    let mut out = vec![];
    for d in &now {
        if d.domid == 0 {
            continue;
        }
        let uuid = match known.get(&d.domid) {
            Some((u, _)) => *u,
            None => match ours(xs, d).await {
                Some(u) => u,
                None => continue,
            },
        };
        let before = known.insert(d.domid, (uuid, d.power)).map(|(_, p)| p);
        if let Power::Shutdown(reason) = d.power {
            if before != Some(d.power) {
                out.push(Ok(DomainEvent::Shutdown {
                    domid: d.domid,
                    uuid,
                    reason,
                }));
            }
        }
    }
    let gone: Vec<DomId> = known
        .keys()
        .filter(|k| !now.iter().any(|d| d.domid == **k))
        .copied()
        .collect();
    for domid in gone {
        if let Some((uuid, _)) = known.remove(&domid) {
            out.push(Ok(DomainEvent::Gone { domid, uuid }));
        }
    }
    Ok(out)
}

/// The VM uuid if the domain carries our marker with its own handle.
pub(crate) async fn ours(xs: &xenstore::Xenstore, d: &DomainState) -> Option<Uuid> {
    let path = format!("{}/uuid", tree::marker_path(d.domid));
    let v = xs.try_read(&path).await.ok()??;
    let u = Uuid::parse_str(String::from_utf8_lossy(&v).trim()).ok()?;
    // A stale marker of a reused domid does not match the new handle.
    (u == d.handle).then_some(u)
}
