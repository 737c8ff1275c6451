//! Command-line handling on both ends of `/cli`.
//!
//! Client side ([`parse_client_args`]): the `xe` binary takes out the
//! arguments it acts on itself (`-s`, `-p`, `-u`, `-pw`, `-pwf`, `-h`,
//! `--nossl`, `--debug`, `--debug-on-fail`, `--traceparent`, and the same as
//! `server=`, `port=`, `username=`, `password=`, `passwordfile=`, `nossl=`,
//! `debug=`, `debugonfail=`, `traceparent=`) and passes everything else to the
//! server untouched, one argument per line ([`request_body`]). Priorities as
//! in the reference: command line > `XE_EXTRA_ARGS` > `~/.xe` > defaults.
//!
//! Server side ([`parse_body`], [`parse_commandline`]): the body is split into
//! lines (an optional first `session_id=` line), then `--x` becomes `x=true`,
//! the two-token switches `-u -pw -s -h -p` become `username password server
//! server port`, and every other argument is split on its first `=`.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Options the client acts on itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// `-s`/`-h`/`server=`; default `127.0.0.1`.
    pub server: String,
    /// `-p`/`port=`; default 443 with TLS, 80 without.
    pub port: Option<u16>,
    /// `-u`/`username=`; default `root`.
    pub username: String,
    /// `-pw`/`password=`; default `null`.
    pub password: String,
    /// `-pwf`/`passwordfile=`: first line username, second line password.
    pub password_file: Option<String>,
    /// Cleared by `--nossl`/`nossl=true`. TLS is never used to 127.0.0.1.
    pub use_ssl: bool,
    /// `--debug`.
    pub debug: bool,
    /// `--debug-on-fail`.
    pub debug_on_fail: bool,
    /// `--traceparent` or the `TRACEPARENT` environment variable.
    pub traceparent: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            server: "127.0.0.1".into(),
            port: None,
            username: "root".into(),
            password: "null".into(),
            password_file: None,
            use_ssl: true,
            debug: false,
            debug_on_fail: false,
            traceparent: None,
        }
    }
}

impl ClientOptions {
    /// Whether the server is the local host (the reference compares with
    /// `127.0.0.1` only): then the Unix socket is tried first and TLS is never
    /// used.
    pub fn is_localhost(&self) -> bool {
        self.server == "127.0.0.1"
    }

    /// Whether a TCP connection to the server uses TLS.
    pub fn uses_tls(&self) -> bool {
        self.use_ssl && !self.is_localhost()
    }

    /// The port for a connection with or without TLS.
    pub fn port_for(&self, tls: bool) -> u16 {
        self.port.unwrap_or(if tls { 443 } else { 80 })
    }

    /// The host part of `server`, without IPv6 brackets.
    pub fn host(&self) -> &str {
        let s = self.server.as_str();
        s.strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(s)
    }
}

/// What the client was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInvocation {
    /// The options it acts on.
    pub options: ClientOptions,
    /// The arguments for the server, in the reference's order: command line,
    /// then `XE_EXTRA_ARGS`, then unknown `~/.xe` keys.
    pub rest: Vec<String>,
}

/// Why the client stops before connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientArgsError {
    /// Print the usage text on stderr and exit 0 (the reference's `Usage`),
    /// after `message` if there is one (e.g. a bad port).
    Usage(Option<String>),
    /// Print the message on stderr and exit 1.
    Fatal(String),
}

impl fmt::Display for ClientArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientArgsError::Usage(Some(m)) | ClientArgsError::Fatal(m) => f.write_str(m),
            ClientArgsError::Usage(None) => f.write_str("usage"),
        }
    }
}

/// The usage text, as the reference prints it (with `argv0`).
pub fn usage(argv0: &str) -> String {
    format!(
        "Usage:
  {argv0} <command>
    [ -s <server> ]            XenServer host
    [ -p <port> ]              XenServer port number
    [ -u <username> -pw <password> | -pwf <password file> ]
                               User authentication (password or file)
    [ --nossl ]                Disable SSL/TLS
    [ --debug ]                Enable debug output
    [ --debug-on-fail ]        Enable debug output only on failure
    [ --minimal ]              Output only values in a comma-separated lists
    [ --traceparent <value> ]  Distributed tracing context
    [ --trace ]                Show task stacktrace on failure
    [ <other arguments> ... ]  Command-specific options

A full list of commands can be obtained by running
  {argv0} help -s <server> -p <port>
"
    )
}

fn parse_port(v: &str) -> Result<u16, ClientArgsError> {
    v.trim().parse::<u16>().map_err(|_| {
        ClientArgsError::Usage(Some("Port number must be an integer (0-65535)\n".into()))
    })
}

fn ocaml_bool(v: &str) -> Result<bool, ClientArgsError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ClientArgsError::Fatal(
            "Unhandled exception\nInvalid_argument(\"bool_of_string\")\n".into(),
        )),
    }
}

/// Applies a client keyword; `Ok(false)` if it is not one of ours.
fn set_keyword(o: &mut ClientOptions, k: &str, v: &str) -> Result<bool, ClientArgsError> {
    match k {
        "server" => o.server = v.to_string(),
        "port" => o.port = Some(parse_port(v)?),
        "username" => o.username = v.to_string(),
        "password" => o.password = v.to_string(),
        "passwordfile" => o.password_file = Some(v.to_string()),
        "nossl" => o.use_ssl = !ocaml_bool(v)?,
        "debug" => o.debug = v == "true",
        "debugonfail" => o.debug_on_fail = v == "true",
        "traceparent" => o.traceparent = Some(v.to_string()),
        _ => return Ok(false),
    }
    Ok(true)
}

fn process_args(o: &mut ClientOptions, args: &[String]) -> Result<Vec<String>, ClientArgsError> {
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let next = args.get(i + 1).map(String::as_str);
        let two = match (a, next) {
            ("-s", Some(v)) | ("-h", Some(v)) => Some(("server", v)),
            ("-p", Some(v)) => Some(("port", v)),
            ("-u", Some(v)) => Some(("username", v)),
            ("-pw", Some(v)) => Some(("password", v)),
            ("-pwf", Some(v)) => Some(("passwordfile", v)),
            ("--traceparent", Some(v)) => Some(("traceparent", v)),
            _ => None,
        };
        let one = match a {
            "--nossl" => Some(("nossl", "true")),
            "--debug" => Some(("debug", "true")),
            "--debug-on-fail" => Some(("debugonfail", "true")),
            _ => None,
        };
        if let Some((k, v)) = two {
            set_keyword(o, k, v)?;
            i += 2;
            continue;
        }
        if let Some((k, v)) = one {
            set_keyword(o, k, v)?;
            i += 1;
            continue;
        }
        match a.split_once('=') {
            Some((k, v)) if set_keyword(o, k, v)? => {}
            _ => rest.push(a.to_string()),
        }
        i += 1;
    }
    Ok(rest)
}

/// Splits `XE_EXTRA_ARGS`: comma-separated, `\,` keeps a comma inside an
/// argument, and backslashes are then removed (the reference's algorithm).
pub fn split_extra_args(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let (mut pos, mut i) = (0usize, 0usize);
    while pos < b.len() {
        if b[pos] == b',' {
            pos += 1;
            i = pos;
        } else if i >= b.len() || (b[i] == b',' && b[i - 1] != b'\\') {
            let seg: Vec<u8> = b[pos..i].iter().copied().filter(|&c| c != b'\\').collect();
            out.push(String::from_utf8_lossy(&seg).into_owned());
            i += 1;
            pos = i;
        } else {
            i += 1;
        }
    }
    out
}

/// Parses the text of `~/.xe`: `key=value` lines, blank lines skipped. A line
/// without `=` makes the whole file ignored (the reference then prints
/// "Error parsing rc file. No defaults loaded" on stderr): `Err` carries that
/// message.
pub fn parse_rc(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        if line.is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => return Err("Error parsing rc file. No defaults loaded\n".into()),
        }
    }
    // A final newline is no line of its own.
    Ok(out)
}

/// Parses the client's command line (without `argv[0]`).
///
/// `rc` are the `~/.xe` pairs, `extra_args` the value of `XE_EXTRA_ARGS`,
/// `traceparent_env` the value of `TRACEPARENT`.
pub fn parse_client_args(
    argv: &[String],
    rc: &[(String, String)],
    extra_args: Option<&str>,
    traceparent_env: Option<&str>,
) -> Result<ClientInvocation, ClientArgsError> {
    let mut o = ClientOptions::default();
    let mut rc_rest = Vec::new();
    for (k, v) in rc {
        if !set_keyword(&mut o, k, v)? {
            rc_rest.push(format!("{k}={v}"));
        }
    }
    let extras = split_extra_args(extra_args.unwrap_or(""));
    let extras_rest = process_args(&mut o, &extras)?;
    if let Some(tp) = traceparent_env {
        o.traceparent = Some(tp.to_string());
    }
    let help = argv.iter().any(|a| a == "-help" || a == "--help");
    let mut rest = process_args(&mut o, argv)?;
    if help {
        return Err(ClientArgsError::Usage(None));
    }
    rest.extend(extras_rest);
    rest.extend(rc_rest);
    Ok(ClientInvocation { options: o, rest })
}

/// Reads a password file: username on the first line, password on the
/// second. Errors carry the reference's messages.
pub fn read_password_file(path: &str) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|_| format!("Error opening password file '{path}'\n"))?;
    let mut lines = text.split_inclusive('\n');
    let mut take = || {
        lines
            .next()
            .map(|l| l.strip_suffix('\n').unwrap_or(l).to_string())
    };
    match (take(), take()) {
        (Some(u), Some(p)) => Ok((u, p)),
        _ => Err(
            "Error: password file format: expecting username on the first line, \
                  password on the second line\n"
                .into(),
        ),
    }
}

/// Lexically normalises a path made absolute against `cwd`.
pub fn canonicalize(path: &str, cwd: &Path) -> PathBuf {
    let p = Path::new(path);
    let joined = if p.is_relative() {
        cwd.join(p)
    } else {
        p.to_path_buf()
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The files the server may ask this client to read or write: the values
/// of all `key=value` arguments (non-blank), made absolute. As in the
/// reference, a download may also go to the current directory.
pub fn permitted_filenames(rest: &[String], cwd: &Path) -> Vec<PathBuf> {
    rest.iter()
        .filter_map(|a| a.split_once('='))
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(_, v)| canonicalize(v, cwd))
        .collect()
}

/// The `/cli` request body: the arguments then `username=` and
/// `password=`, separated by `\n` (no final newline).
pub fn request_body(rest: &[String], username: &str, password: &str) -> String {
    let mut lines: Vec<String> = rest.to_vec();
    lines.push(format!("username={username}"));
    lines.push(format!("password={password}"));
    lines.join("\n")
}

/// The whole HTTP/1.0 request the reference client sends.
pub fn http_request(body: &str, traceparent: Option<&str>, baggage: Option<&str>) -> Vec<u8> {
    let mut s = String::from("POST /cli HTTP/1.0\r\n");
    s.push_str(&format!(
        "User-agent: xe-cli/Unix/{}.{}\r\n",
        crate::protocol::MAJOR,
        crate::protocol::MINOR
    ));
    s.push_str("originator: cli\r\n");
    if let Some(tp) = traceparent {
        s.push_str(&format!("traceparent: {tp}\r\n"));
    }
    if let Some(b) = baggage {
        s.push_str(&format!("baggage: {b}\r\n"));
    }
    s.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    s.push_str(body);
    s.into_bytes()
}

// ---------------------------------------------------------------------------
// Server side

/// Splits a `/cli` request body into the optional session (first line
/// `session_id=...`) and the argument lines (each without a trailing `\r`).
pub fn parse_body(body: &str) -> (Option<String>, Vec<String>) {
    let mut args: Vec<String> = body
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    match args.first() {
        Some(first) if first.starts_with("session_id=") => {
            let s = first["session_id=".len()..].to_string();
            args.remove(0);
            (Some(s), args)
        }
        _ => (None, args),
    }
}

/// A parsed server-side command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The command (`vm-list`, ...).
    pub cmdname: String,
    /// The parameters in command-line order (duplicates kept; lookups take
    /// the first, like OCaml's `List.assoc`).
    pub params: Vec<(String, String)>,
}

/// A syntax error. The reference always reports it with an empty detail, so
/// the user sees `Syntax error: ` and `For usage run: 'xe help'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// The server's switch table for two-token switches.
fn convert_switch(s: &str) -> Option<&'static str> {
    Some(match s {
        "-u" => "username",
        "-pw" => "password",
        "-s" | "-h" => "server",
        "-p" => "port",
        _ => return None,
    })
}

/// Parses the argument lines (after [`parse_body`]) into a command line.
pub fn parse_commandline(args: &[String]) -> Result<CommandLine, ParseError> {
    let err = || ParseError(String::new());
    let cmdname = args.first().ok_or_else(err)?;
    if cmdname.contains('=') {
        return Err(err());
    }
    let mut params = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let p = &args[i];
        if let Some(flag) = p.strip_prefix("--") {
            params.push((flag.to_string(), "true".to_string()));
            i += 1;
        } else if p.starts_with('-') {
            let key = convert_switch(p).ok_or_else(err)?;
            let v = args.get(i + 1).ok_or_else(err)?;
            params.push((key.to_string(), v.clone()));
            i += 2;
        } else {
            let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
            params.push((k.to_string(), v.to_string()));
            i += 1;
        }
    }
    Ok(CommandLine {
        cmdname: cmdname.clone(),
        params,
    })
}

/// Parameters every command accepts, excluded from `*-list` filters.
pub const STD_PARAMS: &[&str] = &[
    "server",
    "password",
    "port",
    "username",
    "minimal",
    "force",
    "multiple",
    "all",
    "message-priority",
    "trace",
];

impl CommandLine {
    /// The first value of `k`.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter: true only for `true` (absent or anything else
    /// is false).
    pub fn get_bool(&self, k: &str) -> bool {
        self.get(k) == Some("true")
    }

    /// Whether `--minimal`/`minimal=true` was given.
    pub fn minimal(&self) -> bool {
        self.get_bool("minimal")
    }

    /// The sub-keys of a map parameter: `device-config:server=x` gives
    /// `("server", "x")` for `name = "device-config"`.
    pub fn map_params(&self, name: &str) -> Vec<(String, String)> {
        self.params
            .iter()
            .filter_map(|(k, v)| {
                let sub = k.strip_prefix(name)?.strip_prefix(':')?;
                (!sub.is_empty()).then(|| (sub.to_string(), v.clone()))
            })
            .collect()
    }

    /// The parameters a `*-list` command filters on: everything but
    /// `params=`, the [`STD_PARAMS`] and `database:` ones.
    pub fn filter_params(&self) -> Vec<(String, String)> {
        self.params
            .iter()
            .filter(|(k, _)| {
                k != "params" && !STD_PARAMS.contains(&k.as_str()) && !k.starts_with("database:")
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn client_switches() {
        let inv = parse_client_args(
            &s(&[
                "vm-list",
                "-s",
                "host1",
                "-p",
                "8443",
                "-u",
                "admin",
                "-pw",
                "secret",
                "--minimal",
                "power-state=running",
                "other-config:k=v=w",
            ]),
            &[],
            None,
            None,
        )
        .unwrap();
        assert_eq!(inv.options.server, "host1");
        assert_eq!(inv.options.port, Some(8443));
        assert_eq!(inv.options.username, "admin");
        assert_eq!(inv.options.password, "secret");
        assert!(inv.options.uses_tls());
        assert_eq!(
            inv.rest,
            s(&[
                "vm-list",
                "--minimal",
                "power-state=running",
                "other-config:k=v=w"
            ])
        );
        let body = request_body(&inv.rest, "admin", "secret");
        assert_eq!(
            body,
            "vm-list\n--minimal\npower-state=running\nother-config:k=v=w\nusername=admin\npassword=secret"
        );
    }

    #[test]
    fn client_keywords_and_defaults() {
        let inv = parse_client_args(
            &s(&[
                "host-cpu-list",
                "server=h",
                "port=80",
                "--nossl",
                "-h",
                "h2",
            ]),
            &[],
            None,
            None,
        )
        .unwrap();
        assert_eq!(inv.options.server, "h2");
        assert!(!inv.options.uses_tls());
        assert_eq!(inv.options.port_for(false), 80);
        assert_eq!(inv.rest, s(&["host-cpu-list"]));

        let d = ClientOptions::default();
        assert_eq!(
            (d.server.as_str(), d.username.as_str(), d.password.as_str()),
            ("127.0.0.1", "root", "null")
        );
        assert!(!d.uses_tls());
        assert_eq!(d.port_for(true), 443);
    }

    #[test]
    fn priorities_rc_extra_cmdline() {
        let rc = parse_rc("server=rc-host\nusername=rcuser\n\nfoo=bar\n").unwrap();
        let inv = parse_client_args(
            &s(&["vm-list", "-u", "cmd"]),
            &rc,
            Some("password=xp,a=b\\,c"),
            Some("00-tp"),
        )
        .unwrap();
        assert_eq!(inv.options.server, "rc-host");
        assert_eq!(inv.options.username, "cmd");
        assert_eq!(inv.options.password, "xp");
        assert_eq!(inv.options.traceparent.as_deref(), Some("00-tp"));
        assert_eq!(inv.rest, s(&["vm-list", "a=b,c", "foo=bar"]));
        assert!(parse_rc("no equals here\n").is_err());
    }

    #[test]
    fn extra_args_split() {
        assert_eq!(split_extra_args(""), Vec::<String>::new());
        assert_eq!(split_extra_args("a=1,b=2"), s(&["a=1", "b=2"]));
        assert_eq!(split_extra_args(",a=1,,b=2,"), s(&["a=1", "b=2"]));
        assert_eq!(split_extra_args("x=a\\,b,y"), s(&["x=a,b", "y"]));
    }

    #[test]
    fn usage_cases() {
        assert_eq!(
            parse_client_args(&s(&["vm-list", "--help"]), &[], None, None),
            Err(ClientArgsError::Usage(None))
        );
        assert!(matches!(
            parse_client_args(&s(&["vm-list", "-p", "x"]), &[], None, None),
            Err(ClientArgsError::Usage(Some(_)))
        ));
        assert!(matches!(
            parse_client_args(&s(&["vm-list", "-p", "70000"]), &[], None, None),
            Err(ClientArgsError::Usage(Some(_)))
        ));
        assert!(usage("xe").starts_with("Usage:\n  xe <command>\n"));
    }

    #[test]
    fn http_request_bytes() {
        let req = http_request("vm-list\nusername=root\npassword=x", None, None);
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "POST /cli HTTP/1.0\r\nUser-agent: xe-cli/Unix/0.2\r\noriginator: cli\r\n\
             content-length: 32\r\n\r\nvm-list\nusername=root\npassword=x"
        );
    }

    #[test]
    fn permitted_files() {
        let cwd = Path::new("/home/u");
        let p = permitted_filenames(
            &s(&[
                "vm-import",
                "filename=./a/../vm.xva",
                "x=",
                "--force",
                "o=/abs",
            ]),
            cwd,
        );
        assert_eq!(
            p,
            vec![PathBuf::from("/home/u/vm.xva"), PathBuf::from("/abs")]
        );
    }

    #[test]
    fn server_parse() {
        let (sess, args) =
            parse_body("session_id=OpaqueRef:abc\r\nvm-list\r\n--minimal\nparams=uuid");
        assert_eq!(sess.as_deref(), Some("OpaqueRef:abc"));
        let cl = parse_commandline(&args).unwrap();
        assert_eq!(cl.cmdname, "vm-list");
        assert_eq!(
            cl.params,
            vec![
                ("minimal".into(), "true".into()),
                ("params".into(), "uuid".into())
            ]
        );
        assert!(cl.minimal());

        let (sess, args) = parse_body(
            "sr-create\ndevice-config:server=10.0.0.1\ndevice-config:serverpath=/a=b\n-u\nroot\nflag\nusername=root\npassword=p",
        );
        assert!(sess.is_none());
        let cl = parse_commandline(&args).unwrap();
        assert_eq!(
            cl.map_params("device-config"),
            vec![
                ("server".to_string(), "10.0.0.1".to_string()),
                ("serverpath".to_string(), "/a=b".to_string())
            ]
        );
        assert_eq!(cl.get("username"), Some("root"));
        assert_eq!(cl.get("flag"), Some(""));
        assert_eq!(cl.filter_params().len(), 3);

        assert!(parse_commandline(&s(&["name=x"])).is_err());
        assert!(parse_commandline(&[]).is_err());
        assert!(parse_commandline(&s(&["vm-list", "-x", "1"])).is_err());
        assert!(parse_commandline(&s(&["vm-list", "-u"])).is_err());
    }

    #[test]
    fn password_file() {
        let dir = std::env::temp_dir().join(format!("xe-pwf-{}", std::process::id()));
        std::fs::write(&dir, "alice\ns3cret\n").unwrap();
        let p = dir.to_str().unwrap();
        assert_eq!(
            read_password_file(p).unwrap(),
            ("alice".into(), "s3cret".into())
        );
        std::fs::write(&dir, "alice").unwrap();
        assert!(read_password_file(p)
            .unwrap_err()
            .contains("password file format"));
        std::fs::remove_file(&dir).unwrap();
        assert!(read_password_file(p)
            .unwrap_err()
            .starts_with("Error opening"));
    }
}
