//! The async client: one connection, many concurrent requests matched by
//! request id, watch events routed by token to per-watch streams.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::perms::Perm;
use crate::wire::{nul_fields, split_fields, Msg, Op, PAYLOAD_MAX};

/// The xenstored Unix socket in dom0.
pub const SOCKET_PATH: &str = "/run/xenstored/socket";
/// The kernel's xenbus device, used when the socket is absent.
pub const XENBUS_PATH: &str = "/dev/xen/xenbus";

/// How often a conflicting transaction is retried before giving up.
const TX_RETRIES: u32 = 64;

type Pending = Mutex<HashMap<u32, oneshot::Sender<Msg>>>;
type Watches = Mutex<HashMap<String, mpsc::UnboundedSender<WatchEvent>>>;

struct Inner {
    out: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<Pending>,
    watches: Arc<Watches>,
    next_req: AtomicU32,
    next_token: AtomicU64,
    closed: Arc<AtomicBool>,
}

/// A xenstore connection. Cheap to clone; clones share the connection.
///
/// Inside [`Xenstore::transaction`] the same methods run in the transaction.
#[derive(Clone)]
pub struct Xenstore {
    inner: Arc<Inner>,
    tx_id: u32,
}

/// A fired watch: the path that changed and the watch's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Path that changed (or `@releaseDomain`/`@introduceDomain`).
    pub path: String,
    /// The token given when the watch was set.
    pub token: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Xenstore {
    /// Connects to xenstored: the Unix socket, else `/dev/xen/xenbus`.
    pub async fn connect() -> Result<Self> {
        match Self::connect_unix(SOCKET_PATH).await {
            Ok(x) => Ok(x),
            Err(sock_err) => Self::connect_xenbus(XENBUS_PATH)
                .await
                .map_err(|_| sock_err),
        }
    }

    /// Connects to a xenstored Unix socket at `path`.
    pub async fn connect_unix(path: &str) -> Result<Self> {
        let s = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|source| Error::Connect {
                path: path.into(),
                source,
            })?;
        let (r, w) = s.into_split();
        Ok(Self::from_io(r, w))
    }

    /// Connects through the xenbus character device at `path`.
    pub async fn connect_xenbus(path: &str) -> Result<Self> {
        let conn = |source| Error::Connect {
            path: path.into(),
            source,
        };
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .await
            .map_err(conn)?;
        let w = f.try_clone().await.map_err(conn)?;
        Ok(Self::from_io(f, w))
    }

    /// Runs the protocol over any byte stream (used by tests with a fake server).
    pub fn from_io<R, W>(mut r: R, mut w: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pending: Arc<Pending> = Arc::default();
        let watches: Arc<Watches> = Arc::default();
        tokio::spawn(async move {
            while let Some(buf) = out_rx.recv().await {
                if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
        });
        let closed = Arc::new(AtomicBool::new(false));
        let (p, wt, c) = (pending.clone(), watches.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok(Some(m)) = Msg::read(&mut r).await {
                if m.ty == Op::WatchEvent as u32 {
                    let f = split_fields(&m.payload);
                    if let [path, token, ..] = &f[..] {
                        if let Some(tx) = lock(&wt).get(token) {
                            let _ = tx.send(WatchEvent {
                                path: path.clone(),
                                token: token.clone(),
                            });
                        }
                    }
                } else if let Some(tx) = lock(&p).remove(&m.req_id) {
                    let _ = tx.send(m);
                }
            }
            // Connection gone: fail outstanding requests and end watch streams.
            // `closed` is set first so a request racing with this either sees
            // it or has its waiter dropped by the clear below.
            c.store(true, Ordering::SeqCst);
            lock(&p).clear();
            lock(&wt).clear();
        });
        Xenstore {
            inner: Arc::new(Inner {
                out,
                pending,
                watches,
                next_req: AtomicU32::new(1),
                next_token: AtomicU64::new(1),
                closed,
            }),
            tx_id: 0,
        }
    }

    /// The transaction this handle runs in (0 = none).
    pub fn tx_id(&self) -> u32 {
        self.tx_id
    }

    async fn request(&self, op: Op, payload: Vec<u8>, what: &str) -> Result<Vec<u8>> {
        let err = |errno: &str| Error::Xenstore {
            op: op.name(),
            path: what.to_string(),
            errno: errno.to_string(),
        };
        if payload.len() > PAYLOAD_MAX {
            // xenstored would answer E2BIG; fail before sending.
            return Err(err("E2BIG"));
        }
        let id = self.inner.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(id, tx);
        let msg = Msg::new(op, id, self.tx_id, payload);
        if self.inner.closed.load(Ordering::SeqCst) || self.inner.out.send(msg.encode()).is_err() {
            lock(&self.inner.pending).remove(&id);
            return Err(Error::Closed);
        }
        let reply = rx.await.map_err(|_| Error::Closed)?;
        if reply.ty == Op::Error as u32 {
            let f = split_fields(&reply.payload);
            return Err(err(f.first().map(String::as_str).unwrap_or("EIO")));
        }
        if reply.ty != op as u32 {
            return Err(Error::Protocol(format!(
                "{} answered with type {}",
                op.name(),
                reply.ty
            )));
        }
        Ok(reply.payload)
    }

    /// Reads a node's value.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.request(Op::Read, nul_fields(&[path.as_bytes()]), path)
            .await
    }

    /// Reads a node's value as UTF-8 (lossy).
    pub async fn read_string(&self, path: &str) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read(path).await?).into_owned())
    }

    /// Reads a node, mapping ENOENT to `None`.
    pub async fn try_read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.read(path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_enoent() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a value, creating the node and missing parents.
    pub async fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<()> {
        let mut p = nul_fields(&[path.as_bytes()]);
        p.extend_from_slice(value.as_ref());
        self.request(Op::Write, p, path).await.map(drop)
    }

    /// Creates an empty node (no error if it exists).
    pub async fn mkdir(&self, path: &str) -> Result<()> {
        self.request(Op::Mkdir, nul_fields(&[path.as_bytes()]), path)
            .await
            .map(drop)
    }

    /// Removes a node and everything below it.
    pub async fn rm(&self, path: &str) -> Result<()> {
        self.request(Op::Rm, nul_fields(&[path.as_bytes()]), path)
            .await
            .map(drop)
    }

    /// Names of a node's children.
    pub async fn directory(&self, path: &str) -> Result<Vec<String>> {
        let p = self
            .request(Op::Directory, nul_fields(&[path.as_bytes()]), path)
            .await?;
        Ok(split_fields(&p))
    }

    /// A node's permissions; the first entry is the owner and default.
    pub async fn get_perms(&self, path: &str) -> Result<Vec<Perm>> {
        let p = self
            .request(Op::GetPerms, nul_fields(&[path.as_bytes()]), path)
            .await?;
        split_fields(&p)
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| Error::Protocol(format!("bad permission {s:?}")))
            })
            .collect()
    }

    /// Sets a node's permissions; the first entry is the owner and default.
    pub async fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<()> {
        let strs: Vec<String> = perms.iter().map(|p| p.to_string()).collect();
        let mut fields: Vec<&[u8]> = vec![path.as_bytes()];
        fields.extend(strs.iter().map(|s| s.as_bytes()));
        self.request(Op::SetPerms, nul_fields(&fields), path)
            .await
            .map(drop)
    }

    /// Watches a path (and everything below it) or a special `@` path.
    ///
    /// xenstored fires once immediately after the watch is set; callers
    /// should treat events as "go and look", not as deltas.
    pub async fn watch(&self, path: &str) -> Result<Watch> {
        let n = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        let token = format!("xs-rs:{n}");
        let (tx, rx) = mpsc::unbounded_channel();
        // Register before asking, so the immediate first event is not lost.
        lock(&self.inner.watches).insert(token.clone(), tx);
        let unregister = || lock(&self.inner.watches).remove(&token);
        let root = Xenstore {
            inner: self.inner.clone(),
            tx_id: 0,
        };
        if let Err(e) = root
            .request(
                Op::Watch,
                nul_fields(&[path.as_bytes(), token.as_bytes()]),
                path,
            )
            .await
        {
            unregister();
            return Err(e);
        }
        Ok(Watch {
            client: root,
            path: path.to_string(),
            token,
            rx,
        })
    }

    /// Runs `f` in a transaction, retrying the whole closure when the commit
    /// (or any step) reports `EAGAIN` because another writer got in first.
    /// If `f` fails with another error the transaction is aborted.
    pub async fn transaction<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut(Xenstore) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let id_s = self.request(Op::TransactionStart, vec![0], "").await?;
            let id: u32 = split_fields(&id_s)
                .first()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Protocol(format!("bad transaction id {id_s:?}")))?;
            let tx = Xenstore {
                inner: self.inner.clone(),
                tx_id: id,
            };
            let res = match f(tx.clone()).await {
                Ok(v) => tx
                    .request(Op::TransactionEnd, b"T\0".to_vec(), "commit")
                    .await
                    .map(|_| v),
                Err(e) => {
                    let _ = tx
                        .request(Op::TransactionEnd, b"F\0".to_vec(), "abort")
                        .await;
                    Err(e)
                }
            };
            match res {
                Err(e) if e.is_eagain() && attempt < TX_RETRIES => continue,
                r => return r,
            }
        }
    }

    /// Tells xenstored about a new domain's ring (gfn) and event channel.
    pub async fn introduce_domain(
        &self,
        domid: u32,
        store_gfn: u64,
        store_port: u32,
    ) -> Result<()> {
        let (d, g, p) = (
            domid.to_string(),
            store_gfn.to_string(),
            store_port.to_string(),
        );
        let what = format!("domid {domid}");
        self.request(
            Op::Introduce,
            nul_fields(&[d.as_bytes(), g.as_bytes(), p.as_bytes()]),
            &what,
        )
        .await
        .map(drop)
    }

    /// Tells xenstored a domain is gone (fires `@releaseDomain`).
    pub async fn release_domain(&self, domid: u32) -> Result<()> {
        let d = domid.to_string();
        self.request(
            Op::Release,
            nul_fields(&[d.as_bytes()]),
            &format!("domid {domid}"),
        )
        .await
        .map(drop)
    }

    /// Whether xenstored knows the domain.
    pub async fn is_domain_introduced(&self, domid: u32) -> Result<bool> {
        let d = domid.to_string();
        let p = self
            .request(
                Op::IsDomainIntroduced,
                nul_fields(&[d.as_bytes()]),
                &format!("domid {domid}"),
            )
            .await?;
        Ok(split_fields(&p).first().map(String::as_str) == Some("T"))
    }

    /// Clears a domain's shutdown flag in xenstored after a resume.
    pub async fn resume_domain(&self, domid: u32) -> Result<()> {
        let d = domid.to_string();
        self.request(
            Op::Resume,
            nul_fields(&[d.as_bytes()]),
            &format!("domid {domid}"),
        )
        .await
        .map(drop)
    }

    /// Asks a guest to shut down cooperatively: writes `reason` (`poweroff`,
    /// `reboot`, `suspend`, ...) to `/local/domain/<domid>/control/shutdown`.
    /// The guest acknowledges by clearing the node (see
    /// [`Xenstore::wait_shutdown_acked`]) and then shuts down with the
    /// matching reason (wait with `xenctrl`'s `wait_for_shutdown`).
    pub async fn request_shutdown(&self, domid: u32, reason: &str) -> Result<()> {
        self.write(&control_shutdown_path(domid), reason).await
    }

    /// Waits until the guest has cleared `control/shutdown` (empty or
    /// removed). Returns false if it did not within `timeout`.
    pub async fn wait_shutdown_acked(
        &self,
        domid: u32,
        timeout: std::time::Duration,
    ) -> Result<bool> {
        let path = control_shutdown_path(domid);
        let mut w = self.watch(&path).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.try_read(&path).await? {
                None => return Ok(true),
                Some(v) if v.is_empty() => return Ok(true),
                Some(_) => {}
            }
            match tokio::time::timeout_at(deadline, w.next()).await {
                Err(_) => return Ok(false),
                Ok(None) => return Err(Error::Closed),
                Ok(Some(_)) => {}
            }
        }
    }

    /// The guest's suspend event channel port, if it advertises one in
    /// `device/suspend/event-channel` (then a save may notify that port
    /// instead of writing `control/shutdown`).
    pub async fn suspend_event_channel(&self, domid: u32) -> Result<Option<u32>> {
        let path = format!("/local/domain/{domid}/device/suspend/event-channel");
        Ok(self
            .try_read(&path)
            .await?
            .and_then(|v| String::from_utf8_lossy(&v).trim().parse().ok()))
    }

    /// The home path of a domain, `/local/domain/<domid>`.
    pub async fn get_domain_path(&self, domid: u32) -> Result<String> {
        let d = domid.to_string();
        let p = self
            .request(
                Op::GetDomainPath,
                nul_fields(&[d.as_bytes()]),
                &format!("domid {domid}"),
            )
            .await?;
        Ok(split_fields(&p).into_iter().next().unwrap_or_default())
    }
}

/// A set watch; yields [`WatchEvent`]s and removes the watch on drop.
pub struct Watch {
    client: Xenstore,
    path: String,
    token: String,
    rx: mpsc::UnboundedReceiver<WatchEvent>,
}

impl Watch {
    /// The next event; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }

    /// The watched path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl futures_core::Stream for Watch {
    type Item = WatchEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        lock(&self.client.inner.watches).remove(&self.token);
        // Fire-and-forget UNWATCH: the reply has no waiter and is dropped,
        // which keeps Drop free of any need for a runtime.
        let id = self.client.inner.next_req.fetch_add(1, Ordering::Relaxed);
        let m = Msg::new(
            Op::Unwatch,
            id,
            0,
            nul_fields(&[self.path.as_bytes(), self.token.as_bytes()]),
        );
        let _ = self.client.inner.out.send(m.encode());
    }
}

/// `/local/domain/<domid>/control/shutdown`.
pub fn control_shutdown_path(domid: u32) -> String {
    format!("/local/domain/{domid}/control/shutdown")
}
