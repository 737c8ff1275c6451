//! xapi-rs: a XenAPI toolstack daemon, drop-in for xapi.
//!
//! Layout: [`generated`] is the API (typed records, enums, message and
//! error tables, roles), generated from the reference's definition by
//! `xapi-codegen`; [`datamodel`] holds the shapes of those tables; [`db`]
//! stores objects; [`api`] dispatches calls (generic messages from the
//! tables plus hand-written handlers); [`wire`] speaks XML-RPC and
//! JSON-RPC; [`server`] serves HTTP over TCP, TLS and a Unix socket;
//! [`probe`] reads the host's facts.

pub mod api;
pub mod args;
pub mod auth;
pub mod cli;
pub mod clitables;
pub mod datamodel;
pub mod db;
pub mod error;
pub mod events;
pub mod expr;
pub mod fuzzing;
pub mod generated;
pub mod objects;
pub mod probe;
pub mod server;
pub mod tls;
pub mod typed;
pub mod value;
pub mod wire;
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
pub async fn start(cfg: Config) -> Result<(Bound, Arc<api::Ctx>), String> {
    let probe: Arc<dyn probe::HostProbe> = if cfg.fake_probe {
        Arc::new(probe::FakeProbe)
    } else {
        match probe::XenProbe::open() {
            Ok(p) => Arc::new(p),
            Err(e) => {
                // Not on Xen (or no privcmd): dom0's `xl info` and procfs.
                tracing::warn!("libxenctrl: {e}; falling back to xl info / procfs");
                Arc::new(probe::DomZeroProbe { xl: cfg.xl.clone() })
            }
        }
    };
    start_with_probe(cfg, probe).await
}

/// As [`start`], with an explicit host probe (e.g. one over libxenctrl).
pub async fn start_with_probe(
    cfg: Config,
    probe: Arc<dyn probe::HostProbe>,
) -> Result<(Bound, Arc<api::Ctx>), String> {
    let db = Arc::new(db::Db::open(&cfg.db).map_err(|e| e.to_string())?);
    let auth: Arc<dyn auth::Authenticator> = match &cfg.static_auth {
        Some(users) if users.is_empty() => Arc::new(auth::DenyAll),
        Some(users) => Arc::new(auth::StaticAuth {
            users: users.clone(),
        }),
        None => make_pam(&cfg),
    };
    let (pool, host) = {
        let (db, probe) = (db.clone(), probe.clone());
        tokio::task::spawn_blocking(move || objects::bootstrap(&db, probe.as_ref()))
            .await
            .map_err(|e| e.to_string())??
    };
    let mut ctx = api::Ctx::new(
        db.clone(),
        auth,
        probe.clone(),
        host.clone(),
        pool,
        cfg.session_timeout,
    );
    ctx.login_failure_delay = cfg.login_failure_delay;
    let ctx = Arc::new(ctx);
    let server = Arc::new(server::Server::new(ctx.clone(), &cfg));
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
                .and_then(value::V::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (tls_cfg, pem) = tls::load_or_generate(&cfg.cert, &get("hostname"), &get("address"))
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
                api::gc_tasks(&ctx.db, TASK_RETENTION);
                api::prune_task_owners(&ctx);
                if last_metrics.elapsed() >= interval {
                    last_metrics = tokio::time::Instant::now();
                    let (db, probe, host) =
                        (ctx.db.clone(), ctx.probe.clone(), ctx.host_ref.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        objects::refresh_metrics(&db, probe.as_ref(), &host)
                    })
                    .await;
                }
            }
        });
    }
    Ok((bound, ctx))
}

#[cfg(feature = "pam")]
fn make_pam(cfg: &Config) -> Arc<dyn auth::Authenticator> {
    Arc::new(auth::PamAuth {
        service: cfg
            .pam_service
            .clone()
            .unwrap_or_else(|| auth::DEFAULT_PAM_SERVICE.into()),
    })
}

#[cfg(not(feature = "pam"))]
fn make_pam(_cfg: &Config) -> Arc<dyn auth::Authenticator> {
    Arc::new(auth::DenyAll)
}
