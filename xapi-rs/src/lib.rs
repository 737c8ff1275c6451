//! xapi-rs: a XenAPI toolstack daemon, drop-in for xapi.
//!
//! Layout: [`datamodel`] declares the API; [`db`] stores objects; [`api`]
//! dispatches calls (generic messages from the datamodel plus hand-written
//! ones); [`wire`] speaks XML-RPC and JSON-RPC; [`server`] serves HTTP over
//! TCP, TLS and a Unix socket; [`probe`] reads the host's facts.

pub mod api;
pub mod auth;
pub mod cli;
pub mod clitables;
pub mod datamodel;
pub mod db;
pub mod events;
pub mod expr;
pub mod fuzzing;
pub mod objects;
pub mod probe;
pub mod server;
pub mod tls;
pub mod value;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Daemon configuration (command line flags, with environment fallbacks).
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

impl Default for Config {
    fn default() -> Self {
        Config {
            http: Some("0.0.0.0:80".into()),
            https: Some("0.0.0.0:443".into()),
            unix: Some("/var/lib/xcp/xapi".into()),
            cert: "/etc/xensource/xapi-ssl.pem".into(),
            db: "/var/lib/xapi-rs/state.redb".into(),
            static_auth: None,
            pam_service: None,
            fake_probe: false,
            // dom0 keeps xl in /usr/sbin, often not on a service's PATH.
            xl: if std::path::Path::new("/usr/sbin/xl").exists() {
                "/usr/sbin/xl".into()
            } else {
                "xl".into()
            },
            session_timeout: Duration::from_secs(24 * 3600),
            // The reference's http_limit_max_rpc_size.
            max_body: 300 * 1024,
            metrics_interval: Duration::from_secs(60),
            // The reference's header_total_timeout_tcp.
            request_timeout: Duration::from_secs(60),
            // The reference's conn_limit_tcp and conn_limit_unix.
            max_connections: 800,
            max_unix_connections: 1024,
            login_failure_delay: Duration::from_secs(5),
        }
    }
}

pub const USAGE: &str = "usage: xapi-rs [options]
  --http ADDR|none        plain HTTP listener (default 0.0.0.0:80; env XAPI_RS_HTTP)
  --https ADDR|none       HTTPS listener (default 0.0.0.0:443; env XAPI_RS_HTTPS)
  --unix PATH|none        Unix socket (default /var/lib/xcp/xapi; env XAPI_RS_UNIX)
  --cert PATH             PEM key+certificate, generated if missing
                          (default /etc/xensource/xapi-ssl.pem; env XAPI_RS_CERT)
  --db PATH               database file (default /var/lib/xapi-rs/state.redb; env XAPI_RS_DB)
  --no-pam                do not use PAM; only --test-credentials can log in
  --test-credentials U:P[,U:P...] with --no-pam: accept exactly these users and passwords
                          (env XAPI_RS_TEST_CREDENTIALS)
  --pam-service NAME      PAM service (default xapi if /etc/pam.d/xapi exists, else login)
  --fake-probe            use fixed host facts instead of xl info / procfs (tests)
  --xl PATH               xl binary (default /usr/sbin/xl if present, else xl)
  --session-timeout SECS  idle session expiry (default 86400)
  --max-body BYTES        largest accepted request body (default 300 KiB)
  --metrics-interval SECS host_metrics refresh period (default 60)
  --request-timeout SECS  longest wait for a request's head, and for its body (default 60)
  --max-connections N     concurrent TCP connections, HTTP and HTTPS (default 800)
  --max-unix-connections N concurrent Unix socket connections (default 1024)
  --login-failure-delay SECS pause before a failed login's answer (default 5)
On start, prints one line `READY http=ADDR https=ADDR unix=PATH` to stdout.";

fn opt(v: &str) -> Option<String> {
    if v == "none" || v.is_empty() {
        None
    } else {
        Some(v.to_string())
    }
}

impl Config {
    pub fn from_args(args: &[String]) -> Result<Config, String> {
        let mut c = Config::default();
        let env = |k: &str| std::env::var(k).ok();
        if let Some(v) = env("XAPI_RS_HTTP") {
            c.http = opt(&v);
        }
        if let Some(v) = env("XAPI_RS_HTTPS") {
            c.https = opt(&v);
        }
        if let Some(v) = env("XAPI_RS_UNIX") {
            c.unix = opt(&v).map(PathBuf::from);
        }
        if let Some(v) = env("XAPI_RS_CERT") {
            c.cert = v.into();
        }
        if let Some(v) = env("XAPI_RS_DB") {
            c.db = v.into();
        }
        let mut creds = env("XAPI_RS_TEST_CREDENTIALS");
        let mut no_pam = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (a.clone(), None),
            };
            let mut val = || -> Result<String, String> {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            let secs = |s: String| -> Result<Duration, String> {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| *f >= 0.0 && *f < 1e9)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("bad duration {s}"))
            };
            match flag.as_str() {
                "--http" => c.http = opt(&val()?),
                "--https" => c.https = opt(&val()?),
                "--unix" => c.unix = opt(&val()?).map(PathBuf::from),
                "--cert" => c.cert = val()?.into(),
                "--db" => c.db = val()?.into(),
                "--no-pam" => no_pam = true,
                "--test-credentials" => creds = Some(val()?),
                "--pam-service" => c.pam_service = Some(val()?),
                "--fake-probe" => c.fake_probe = true,
                "--xl" => c.xl = val()?,
                "--session-timeout" => c.session_timeout = secs(val()?)?,
                "--metrics-interval" => c.metrics_interval = secs(val()?)?,
                "--max-body" => {
                    c.max_body = val()?.parse().map_err(|_| "bad --max-body".to_string())?
                }
                "--request-timeout" => c.request_timeout = secs(val()?)?,
                "--login-failure-delay" => c.login_failure_delay = secs(val()?)?,
                "--max-connections" => {
                    c.max_connections = val()?
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or("bad --max-connections")?
                }
                "--max-unix-connections" => {
                    c.max_unix_connections = val()?
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or("bad --max-unix-connections")?
                }
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        if no_pam || !cfg!(feature = "pam") {
            c.static_auth = Some(
                creds
                    .iter()
                    .flat_map(|s| s.split(','))
                    .filter_map(|s| s.split_once(':'))
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .collect(),
            );
        }
        Ok(c)
    }
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
            .unwrap_or_else(auth::PamAuth::default_service),
    })
}

#[cfg(not(feature = "pam"))]
fn make_pam(_cfg: &Config) -> Arc<dyn auth::Authenticator> {
    Arc::new(auth::DenyAll)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags() {
        let c = Config::from_args(&args(&[
            "--http",
            "127.0.0.1:0",
            "--https=none",
            "--unix",
            "none",
            "--db",
            "/tmp/x",
            "--no-pam",
            "--test-credentials",
            "u:p",
            "--session-timeout",
            "5",
        ]))
        .unwrap();
        assert_eq!(c.http.as_deref(), Some("127.0.0.1:0"));
        assert!(c.https.is_none() && c.unix.is_none());
        assert_eq!(c.static_auth, Some(vec![("u".into(), "p".into())]));
        let c2 = Config::from_args(&args(&["--no-pam", "--test-credentials", "a:1,b:2"])).unwrap();
        assert_eq!(
            c2.static_auth,
            Some(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert_eq!(c2.max_body, 300 * 1024);
        assert!(Config::from_args(&args(&["--max-connections", "0"])).is_err());
        assert_eq!(c.session_timeout, Duration::from_secs(5));
        assert!(Config::from_args(&args(&["--session-timeout", "1e30"])).is_err());
        assert!(Config::from_args(&args(&["--bogus"])).is_err());
        assert!(Config::from_args(&args(&["--db"])).is_err());
    }
}
