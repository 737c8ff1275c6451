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
pub mod auth;
pub mod cli;
pub mod clitables;
pub mod datamodel;
pub mod db;
pub mod error;
pub mod events;
pub mod expr;
pub mod generated;
pub mod objects;
pub mod probe;
pub mod server;
pub mod tls;
pub mod typed;
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
    /// None: PAM. Some(None): deny all. Some(Some((u, p))): static credentials.
    pub static_auth: Option<Option<(String, String)>>,
    pub pam_service: Option<String>,
    pub fake_probe: bool,
    pub xl: String,
    pub session_timeout: Duration,
    pub max_body: usize,
    pub metrics_interval: Duration,
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
            max_body: 16 * 1024 * 1024,
            metrics_interval: Duration::from_secs(60),
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
  --test-credentials U:P  with --no-pam: accept exactly this user and password
                          (env XAPI_RS_TEST_CREDENTIALS)
  --pam-service NAME      PAM service (default xapi if /etc/pam.d/xapi exists, else login)
  --fake-probe            use fixed host facts instead of xl info / procfs (tests)
  --xl PATH               xl binary (default /usr/sbin/xl if present, else xl)
  --session-timeout SECS  idle session expiry (default 86400)
  --max-body BYTES        largest accepted request body (default 16 MiB)
  --metrics-interval SECS host_metrics refresh period (default 60)
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
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        if no_pam || !cfg!(feature = "pam") {
            c.static_auth = Some(creds.and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            }));
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
        Some(Some((u, p))) => Arc::new(auth::StaticAuth {
            user: u.clone(),
            password: p.clone(),
        }),
        Some(None) => Arc::new(auth::DenyAll),
        None => make_pam(&cfg),
    };
    let (pool, host) = {
        let (db, probe) = (db.clone(), probe.clone());
        tokio::task::spawn_blocking(move || objects::bootstrap(&db, probe.as_ref()))
            .await
            .map_err(|e| e.to_string())??
    };
    let ctx = Arc::new(api::Ctx::new(
        db.clone(),
        auth,
        probe.clone(),
        host.clone(),
        pool,
        cfg.session_timeout,
    ));
    let server = Arc::new(server::Server {
        ctx: ctx.clone(),
        max_body: cfg.max_body,
    });
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
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::remove_file(p);
        let l =
            tokio::net::UnixListener::bind(p).map_err(|e| format!("bind {}: {e}", p.display()))?;
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
        assert_eq!(c.static_auth, Some(Some(("u".into(), "p".into()))));
        assert_eq!(c.session_timeout, Duration::from_secs(5));
        assert!(Config::from_args(&args(&["--session-timeout", "1e30"])).is_err());
        assert!(Config::from_args(&args(&["--bogus"])).is_err());
        assert!(Config::from_args(&args(&["--db"])).is_err());
    }
}
