//! xapi-rs: a XenAPI toolstack daemon, drop-in for xapi.
//!
//! Layers, top to bottom (each uses only those below it):
//! - [`http`]: listeners (TCP, TLS, Unix socket), routes, the limits that
//!   bound a client before it logs in; hands `/cli` to [`cli`] and RPC
//!   bodies to [`rpc`].
//! - [`cli`]: the server end of `xe`'s protocol, and its field tables.
//! - [`api`]: the hand-written custom messages, one module per area.
//! - [`rpc`]: dispatch of every message of the definition (generic ones from
//!   the generated tables), wire codecs, sessions, roles, tasks, events.
//! - [`db`]: typed tables, transactions, generations, where-expressions.
//! - [`xenops`]: the hypervisor side (host facts; domains to come).
//! - [`model`] and [`generated`]: the API definition, generated from the
//!   reference's description by `xapi-codegen`, and the types it uses.
//!
//! This file wires them together: [`start`] opens the database, creates the
//! host's objects, hands [`api::handlers`] to the RPC core and listens.

pub mod api;
pub mod args;
pub mod cli;
pub mod db;
pub mod fuzzing;
pub mod generated;
pub mod http;
pub mod model;
pub mod rpc;
pub mod xenops;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use args::Args;

/// Daemon configuration: from the command line ([`args`]), its defaults
/// are [`Args`]'s.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: Option<String>,
    pub https: Option<String>,
    pub unix: Option<PathBuf>,
    pub cert: PathBuf,
    pub db: PathBuf,
    /// None: PAM. Some(pairs): exactly these users and passwords (none: deny all).
    pub static_auth: Option<Vec<(String, String)>>,
    pub pam_service: Option<String>,
    pub fake_probe: bool,
    pub xl: String,
    pub session_timeout: Duration,
    pub max_body: usize,
    pub metrics_interval: Duration,
    /// Longest wait for a request's head, and again for its body.
    pub request_timeout: Duration,
    /// Concurrent connections on TCP (HTTP and HTTPS together).
    pub max_connections: usize,
    /// Concurrent connections on the Unix socket.
    pub max_unix_connections: usize,
    /// Pause before answering a failed login (the reference's: 5 s).
    pub login_failure_delay: Duration,
}

/// Finished tasks are destroyed this long after they finish.
pub const TASK_RETENTION: Duration = Duration::from_secs(3600);

/// Addresses actually bound.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub http: Option<std::net::SocketAddr>,
    pub https: Option<std::net::SocketAddr>,
    pub unix: Option<PathBuf>,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |a: &Option<std::net::SocketAddr>| a.map_or("none".to_string(), |a| a.to_string());
        write!(
            f,
            "http={} https={} unix={}",
            s(&self.http),
            s(&self.https),
            self.unix
                .as_ref()
                .map_or("none".to_string(), |p| p.display().to_string())
        )
    }
}

/// Open the database, create the host objects, bind the listeners and
/// spawn their loops. Returns once everything listens.
pub async fn start(cfg: Config) -> Result<(Bound, Arc<rpc::Ctx>), String> {
    let probe: Arc<dyn xenops::probe::HostProbe> = if cfg.fake_probe {
        Arc::new(xenops::probe::FakeProbe)
    } else {
        match xenops::probe::XenProbe::open() {
            Ok(p) => Arc::new(p),
            Err(e) => {
                // Not on Xen (or no privcmd): dom0's `xl info` and procfs.
                tracing::warn!("libxenctrl: {e}; falling back to xl info / procfs");
                Arc::new(xenops::probe::DomZeroProbe { xl: cfg.xl.clone() })
            }
        }
    };
    start_with_probe(cfg, probe).await
}

/// As [`start`], with an explicit host probe (e.g. one over libxenctrl).
pub async fn start_with_probe(
    cfg: Config,
    probe: Arc<dyn xenops::probe::HostProbe>,
) -> Result<(Bound, Arc<rpc::Ctx>), String> {
    let db = Arc::new(db::Db::open(&cfg.db).map_err(|e| e.to_string())?);
    let auth: Arc<dyn rpc::auth::Authenticator> = match &cfg.static_auth {
        Some(users) if users.is_empty() => Arc::new(rpc::auth::DenyAll),
        Some(users) => Arc::new(rpc::auth::StaticAuth {
            users: users.clone(),
        }),
        None => make_pam(&cfg),
    };
    let (pool, host) = {
        let (db, probe) = (db.clone(), probe.clone());
        // The local SR lives beside the database (/var/lib/xapi-rs/sr).
        let state_dir = cfg
            .db
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let fake_probe = cfg.fake_probe;
        tokio::task::spawn_blocking(move || {
            let (pool, host) = api::host::bootstrap::bootstrap(&db, probe.as_ref())?;
            api::storage::local::ensure(
                &db,
                &model::typed::Ref::new(host.clone()),
                &model::typed::Ref::new(pool.clone()),
                &state_dir,
            )
            .map_err(|e| format!("local storage: {e}"))?;
            if !fake_probe {
                // On the build machine (a fake hypervisor) its own bridges
                // (docker0, ...) are no networks of a Xen host.
                let bridges = api::network::local::read_bridges(
                    std::path::Path::new("/sys/class/net"),
                    api::network::local::ipv4_of,
                );
                api::network::local::ensure(&db, &model::typed::Ref::new(host.clone()), &bridges)
                    .map_err(|e| format!("networks: {e}"))?;
            }
            Ok::<_, String>((pool, host))
        })
        .await
        .map_err(|e| e.to_string())??
    };
    let mut ctx = rpc::Ctx::new(
        db.clone(),
        auth,
        probe.clone(),
        host.clone(),
        pool,
        cfg.session_timeout,
        api::handlers(),
    );
    ctx.login_failure_delay = cfg.login_failure_delay;
    let ctx = Arc::new(ctx);
    if !cfg.fake_probe {
        // VM operations need libxenctrl and xenstored; without them (not a
        // dom0) the rest of the API still serves.
        match xenops::Xenops::connect().await {
            Ok(x) => {
                let x = Arc::new(x);
                let _ = ctx.xenops.set(x.clone());
                api::vm::tracking::spawn(ctx.clone(), x);
            }
            Err(e) => tracing::warn!("hypervisor: {e}; VM power operations unavailable"),
        }
    }
    let server = Arc::new(http::Server::new(ctx.clone(), &cfg));
    let mut bound = Bound::default();
    if let Some(a) = &cfg.http {
        let l = tokio::net::TcpListener::bind(a)
            .await
            .map_err(|e| format!("bind {a}: {e}"))?;
        bound.http = l.local_addr().ok();
        tokio::spawn(server.clone().run_tcp(l));
    }
    if let Some(a) = &cfg.https {
        let h = db.get("host", &host).unwrap_or_default();
        let get = |k: &str| {
            h.get(k)
                .and_then(model::value::V::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (tls_cfg, pem) =
            http::tls::load_or_generate(&cfg.cert, &get("hostname"), &get("address"))
                .map_err(|e| e.to_string())?;
        if let Ok(mut p) = ctx.certificate_pem.lock() {
            *p = pem;
        }
        let l = tokio::net::TcpListener::bind(a)
            .await
            .map_err(|e| format!("bind {a}: {e}"))?;
        bound.https = l.local_addr().ok();
        tokio::spawn(
            server
                .clone()
                .run_tls(l, tokio_rustls::TlsAcceptor::from(tls_cfg)),
        );
    }
    if let Some(p) = &cfg.unix {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        // Root-only, as the reference keeps it: a directory it creates is
        // 0700, and the socket itself 0600 (whoever connects is root).
        if let Some(dir) = p.parent() {
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        let _ = std::fs::remove_file(p);
        let l =
            tokio::net::UnixListener::bind(p).map_err(|e| format!("bind {}: {e}", p.display()))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
        bound.unix = Some(p.clone());
        tokio::spawn(server.clone().run_unix(l));
    }
    // Housekeeping: session expiry and metrics refresh.
    {
        let ctx = ctx.clone();
        let interval = cfg.metrics_interval.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut last_metrics = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1).min(interval)).await;
                ctx.reap_sessions();
                rpc::gc_tasks(&ctx.db, TASK_RETENTION);
                rpc::prune_task_owners(&ctx);
                if last_metrics.elapsed() >= interval {
                    last_metrics = tokio::time::Instant::now();
                    let (db, probe, host) =
                        (ctx.db.clone(), ctx.probe.clone(), ctx.host_ref.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        api::host::bootstrap::refresh_metrics(&db, probe.as_ref(), &host)
                    })
                    .await;
                }
            }
        });
    }
    Ok((bound, ctx))
}

#[cfg(feature = "pam")]
fn make_pam(cfg: &Config) -> Arc<dyn rpc::auth::Authenticator> {
    Arc::new(rpc::auth::PamAuth {
        service: cfg
            .pam_service
            .clone()
            .unwrap_or_else(|| rpc::auth::DEFAULT_PAM_SERVICE.into()),
    })
}

#[cfg(not(feature = "pam"))]
fn make_pam(_cfg: &Config) -> Arc<dyn rpc::auth::Authenticator> {
    Arc::new(rpc::auth::DenyAll)
}
