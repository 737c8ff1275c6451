//! The daemon's command line: flags, with environment fallbacks, and the
//! defaults of [`Config`].

use crate::Config;
use clap::{CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;
use std::time::Duration;

/// xapi-rs: the XenAPI toolstack daemon, drop-in for xapi.
#[derive(Parser, Debug)]
#[command(
    name = "xapi-rs",
    version,
    // A flag given again wins over its earlier value (tests add to a base command line).
    args_override_self = true,
    after_help = "On start, prints one line `READY http=ADDR https=ADDR unix=PATH` to stdout."
)]
pub struct Args {
    /// Plain HTTP listener (`none`: no listener)
    #[arg(
        long,
        value_name = "ADDR|none",
        env = "XAPI_RS_HTTP",
        default_value = "0.0.0.0:80"
    )]
    http: String,
    /// HTTPS listener (`none`: no listener)
    #[arg(
        long,
        value_name = "ADDR|none",
        env = "XAPI_RS_HTTPS",
        default_value = "0.0.0.0:443"
    )]
    https: String,
    /// Unix socket (`none`: no socket)
    #[arg(
        long,
        value_name = "PATH|none",
        env = "XAPI_RS_UNIX",
        default_value = "/var/lib/xcp/xapi"
    )]
    unix: String,
    /// PEM key and certificate, generated if missing
    #[arg(
        long,
        value_name = "PATH",
        env = "XAPI_RS_CERT",
        default_value = "/etc/xensource/xapi-ssl.pem"
    )]
    cert: PathBuf,
    /// Database file
    #[arg(
        long,
        value_name = "PATH",
        env = "XAPI_RS_DB",
        default_value = "/var/lib/xapi-rs/state.redb"
    )]
    db: PathBuf,
    /// Do not use PAM: only --test-credentials can log in
    #[arg(long)]
    no_pam: bool,
    /// With --no-pam: accept exactly these users and passwords
    #[arg(
        long,
        value_name = "USER:PASSWORD[,USER:PASSWORD...]",
        env = "XAPI_RS_TEST_CREDENTIALS",
        hide_env_values = true,
        value_parser = credentials
    )]
    test_credentials: Option<Credentials>,
    /// PAM service [default: xapi, i.e. /etc/pam.d/xapi]
    #[arg(long, value_name = "NAME")]
    pam_service: Option<String>,
    /// Use fixed host facts instead of xl info / procfs (tests)
    #[arg(long)]
    fake_probe: bool,
    /// The xl binary [default: /usr/sbin/xl if present, else xl]
    #[arg(long, value_name = "PATH", default_value_t = default_xl(), hide_default_value = true)]
    xl: String,
    /// Idle session expiry
    #[arg(long, value_name = "SECS", default_value = "86400", value_parser = seconds)]
    session_timeout: Duration,
    /// Largest accepted request body (the reference's http_limit_max_rpc_size)
    #[arg(long, value_name = "BYTES", default_value_t = 300 * 1024)]
    max_body: usize,
    /// host_metrics refresh period
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    metrics_interval: Duration,
    /// Longest wait for a request's head, and again for its body (the
    /// reference's header_total_timeout_tcp)
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    request_timeout: Duration,
    /// Concurrent TCP connections, HTTP and HTTPS together (the reference's conn_limit_tcp)
    #[arg(long, value_name = "N", default_value = "800", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Concurrent Unix socket connections (the reference's conn_limit_unix)
    #[arg(long, value_name = "N", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..))]
    max_unix_connections: u32,
    /// Pause before a failed login's answer (the reference's: 5 s)
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    login_failure_delay: Duration,
}

/// dom0 keeps xl in /usr/sbin, often not on a service's PATH.
fn default_xl() -> String {
    if std::path::Path::new("/usr/sbin/xl").exists() {
        "/usr/sbin/xl".into()
    } else {
        "xl".into()
    }
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| *f >= 0.0 && *f < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("not a number of seconds in [0, 1e9): {s}"))
}

/// `USER:PASSWORD[,USER:PASSWORD...]`, one value (a newtype: clap takes a
/// bare `Vec` for a flag given several times).
#[derive(Clone, Debug)]
struct Credentials(Vec<(String, String)>);

fn credentials(s: &str) -> Result<Credentials, String> {
    s.split(',')
        .map(|pair| {
            pair.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .ok_or_else(|| "expected USER:PASSWORD[,USER:PASSWORD...]".to_string())
        })
        .collect::<Result<_, _>>()
        .map(Credentials)
}

/// `none` (or nothing) turns a listener off.
fn listener(v: String) -> Option<String> {
    (v != "none" && !v.is_empty()).then_some(v)
}

impl From<Args> for Config {
    fn from(a: Args) -> Config {
        Config {
            http: listener(a.http),
            https: listener(a.https),
            unix: listener(a.unix).map(PathBuf::from),
            cert: a.cert,
            db: a.db,
            static_auth: (a.no_pam || !cfg!(feature = "pam"))
                .then(|| a.test_credentials.map(|c| c.0).unwrap_or_default()),
            pam_service: a.pam_service,
            fake_probe: a.fake_probe,
            xl: a.xl,
            session_timeout: a.session_timeout,
            max_body: a.max_body,
            metrics_interval: a.metrics_interval,
            request_timeout: a.request_timeout,
            max_connections: a.max_connections as usize,
            max_unix_connections: a.max_unix_connections as usize,
            login_failure_delay: a.login_failure_delay,
        }
    }
}

impl Config {
    /// The configuration from command line `args` (without the program
    /// name) and the environment. `--help` and `--version` come back as
    /// errors too: `Error::exit` prints them and exits 0, others exit 2.
    pub fn from_args(args: &[String]) -> Result<Config, clap::Error> {
        let argv = std::iter::once("xapi-rs".to_string()).chain(args.iter().cloned());
        Ok(Args::try_parse_from(argv)?.into())
    }
}

impl Default for Config {
    /// The command line's defaults, whatever the environment says.
    fn default() -> Self {
        let m = Args::command()
            .mut_args(|a| a.env(None))
            .get_matches_from(["xapi-rs"]);
        Args::from_arg_matches(&m)
            .expect("the defaults are valid")
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Args::command().debug_assert();
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
        assert_eq!(c.db, PathBuf::from("/tmp/x"));
        assert_eq!(c.static_auth, Some(vec![("u".into(), "p".into())]));
        let c2 = Config::from_args(&args(&["--no-pam", "--test-credentials", "a:1,b:2"])).unwrap();
        assert_eq!(
            c2.static_auth,
            Some(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert_eq!(c2.max_body, 300 * 1024);
        assert!(Config::from_args(&args(&["--max-connections", "0"])).is_err());
        assert_eq!(c.session_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_command_lines_are_errors_and_help_is_not() {
        let kind = |a: &[&str]| Config::from_args(&args(a)).unwrap_err().kind();
        assert_eq!(kind(&["--bogus"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["--db"]), ErrorKind::InvalidValue);
        assert_eq!(
            kind(&["--session-timeout", "1e30"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind(&["--max-body", "lots"]), ErrorKind::ValueValidation);
        assert_eq!(
            kind(&["--test-credentials", "nocolon"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind(&["extra"]), ErrorKind::UnknownArgument);
        let help = Config::from_args(&args(&["--help"])).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        assert_eq!(help.exit_code(), 0);
        assert_eq!(
            Config::from_args(&args(&["--bogus"]))
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn defaults_ignore_the_environment() {
        let c = Config::default();
        assert_eq!(c.http.as_deref(), Some("0.0.0.0:80"));
        assert_eq!(c.https.as_deref(), Some("0.0.0.0:443"));
        assert_eq!(c.unix, Some(PathBuf::from("/var/lib/xcp/xapi")));
        assert_eq!(c.session_timeout, Duration::from_secs(86400));
        assert_eq!(c.max_body, 300 << 10);
        let pam = if cfg!(feature = "pam") {
            None
        } else {
            Some(vec![])
        };
        assert_eq!(c.static_auth, pam);
    }
}
