//! `xe`: the thin client of `POST /cli`.
//!
//! Behaviour follows the reference client (xen-api `ocaml/xe-cli/newcli.ml`):
//! the server defaults to 127.0.0.1, reached first over the Unix socket
//! `/var/lib/xcp/xapi` and then over plain HTTP on port 80; any other server
//! is reached over TLS on port 443 unless `--nossl` (then plain HTTP, port
//! 80); `-p` overrides the port. Like the reference (stunnel with
//! `verify_cert:None`), the server's certificate is NOT verified: any
//! certificate is accepted, only the handshake signatures are checked.
//!
//! Extension: `XE_UNIX_SOCKET` overrides the local socket path.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xe::args::{self, ClientArgsError, ClientOptions};
use xe::protocol::{self, Blob, Command, Message, ProtocolError, Response, MAJOR, MINOR};

const HEARTBEAT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------
// Diagnostics

/// Where `--debug` output goes: stderr, a buffer shown on failure
/// (`--debug-on-fail`), or nowhere.
enum DebugSink {
    Off,
    Stderr,
    Buffer(String),
}

impl DebugSink {
    fn log(&mut self, s: &str) {
        match self {
            DebugSink::Off => {}
            DebugSink::Stderr => {
                let _ = io::stderr().write_all(s.as_bytes());
            }
            DebugSink::Buffer(b) => b.push_str(s),
        }
    }
}

/// Why the client stops: the message for stderr (exit status 1).
struct Fail(String);

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail(format!("Error: {} (calling {})\n", strerror(&e), "write"))
    }
}

/// The C library's wording of an I/O error, without Rust's "(os error N)".
fn strerror(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

// ---------------------------------------------------------------------------
// Connections

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let r = match self {
            Conn::Tcp(s) => s.read(b),
            Conn::Unix(s) => s.read(b),
            Conn::Tls(s) => s.read(b),
        };
        match r {
            // A peer closing TLS without close_notify is an ordinary EOF here.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            r => r,
        }
    }
}

impl Write for Conn {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(b),
            Conn::Unix(s) => s.write(b),
            Conn::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

mod tls {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    /// Accepts any server certificate, as the reference's stunnel
    /// (`verify_cert:None`) does; handshake signatures are still checked.
    #[derive(Debug)]
    pub struct AcceptAnyCert(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tls::AcceptAnyCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A TCP connection (TLS unless to 127.0.0.1 or `--nossl`), as the
/// reference's `with_open_tcp`.
fn open_tcp(opts: &ClientOptions, server: &str, dbg: &mut DebugSink) -> Result<Conn, Fail> {
    let o = ClientOptions {
        server: server.to_string(),
        ..opts.clone()
    };
    let tls = o.uses_tls();
    let port = o.port_for(tls);
    let host = o.host().to_string();
    let addrs: Vec<_> = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => Vec::new(),
    };
    if addrs.is_empty() {
        return Err(Fail(format!("Host '{server}' not found.\n")));
    }
    dbg.log(&format!(
        "Connecting via {} to [{server}] port [{port}]\n",
        if tls { "TLS" } else { "TCP" }
    ));
    // With TLS the reference talks to a local stunnel, so a server it cannot
    // reach shows as a connection closed before the greeting.
    let unreachable =
        || Fail("Unable to contact server. Please check server and port settings.\n".into());
    let mut last_err = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect(a) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let stream = match stream {
        Some(s) => s,
        None if tls => return Err(unreachable()),
        None => {
            let e = last_err.unwrap_or_else(|| io::Error::other("no address"));
            return Err(Fail(format!(
                "Error: {} (calling connect )\n",
                strerror(&e)
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    if !tls {
        return Ok(Conn::Tcp(stream));
    }
    let cfg = tls_config().map_err(|e| Fail(format!("Client Side error: {e}.\n")))?;
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        Err(_) => rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| Fail(format!("Host '{server}' not found.\n")))?,
    };
    let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| {
        dbg.log(&format!("TLS: {e}\n"));
        unreachable()
    })?;
    let mut tls_stream = rustls::StreamOwned::new(conn, stream);
    // Complete the handshake now so failures are reported as such.
    while tls_stream.conn.is_handshaking() {
        if let Err(e) = tls_stream.conn.complete_io(&mut tls_stream.sock) {
            dbg.log(&format!("TLS handshake failed: {e}\n"));
            return Err(unreachable());
        }
    }
    Ok(Conn::Tls(Box::new(tls_stream)))
}

/// The reference's `with_open_channels`: the Unix socket first for the
/// local host, else TCP.
fn open_main(opts: &ClientOptions, dbg: &mut DebugSink) -> Result<Conn, Fail> {
    if opts.is_localhost() {
        let path = std::env::var("XE_UNIX_SOCKET").unwrap_or_else(|_| "/var/lib/xcp/xapi".into());
        dbg.log(&format!("Connecting to Unix socket [{path}]"));
        match UnixStream::connect(&path) {
            Ok(s) => {
                dbg.log("\n");
                return Ok(Conn::Unix(s));
            }
            Err(_) => dbg.log(" failed\n"),
        }
    }
    open_tcp(opts, &opts.server, dbg)
}

// ---------------------------------------------------------------------------
// HTTP side transfers (HttpGet / HttpPut)

/// `https://host/path` gives `(host, path)`; anything else is a path on
/// the server we talk to.
fn parse_url(url: &str, default_server: &str) -> (String, String) {
    if let Some(rest) = url.strip_prefix("https://") {
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if !hostport.is_empty() {
            let host = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
            let host = match host.rfind(':') {
                Some(i) if !host.ends_with(']') && host[..i].find(':').is_none() => &host[..i],
                _ => host,
            };
            return (host.to_string(), percent_decode(path));
        }
    }
    (default_server.to_string(), url.to_string())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct HttpHead {
    code: u16,
    location: Option<String>,
}

fn read_head<R: BufRead>(r: &mut R) -> io::Result<HttpHead> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let code = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.trim().parse().ok())
        .ok_or_else(|| io::Error::other("Bad response from HTTP server"))?;
    let mut location = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(": ") {
            if k.eq_ignore_ascii_case("location") {
                location = Some(v.to_string());
            }
        }
    }
    Ok(HttpHead { code, location })
}

/// Copies `from` to `to`, sending `Wait` on the main channel every 300 s.
fn copy_with_heartbeat(from: &mut dyn Read, to: &mut dyn Write, main: &mut Conn) -> io::Result<()> {
    let mut buf = vec![0u8; 65536];
    let mut last = Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        if last.elapsed() >= HEARTBEAT {
            protocol::write_message(main, &Response::Wait.into())?;
            last = Instant::now();
        }
    }
    to.flush()
}

enum Transfer {
    Done,
    /// Client-side error: tell the server `Failed`, print it, exit 1.
    ClientSide(String),
    /// Other failure: tell the server `Failed` and let it explain.
    Failed(String),
}

fn http_get(
    opts: &ClientOptions,
    filename: &str,
    url: &str,
    permitted: &[PathBuf],
    main: &mut Conn,
    dbg: &mut DebugSink,
) -> Result<Transfer, Fail> {
    let mut url = url.to_string();
    for _ in 0..10 {
        let (server, path) = parse_url(&url, &opts.server);
        dbg.log(&format!(
            "Opening connection to server '{server}' path '{path}'\n"
        ));
        let conn = match open_tcp(opts, &server, dbg) {
            Ok(c) => c,
            Err(Fail(m)) => return Ok(Transfer::Failed(m)),
        };
        let mut r = BufReader::new(conn);
        let head = (|| {
            r.get_mut()
                .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
            r.get_mut().flush()?;
            read_head(&mut r)
        })();
        let head = match head {
            Ok(h) => h,
            Err(e) => return Ok(Transfer::Failed(e.to_string())),
        };
        match head.code {
            200 => {
                let mut out: Box<dyn Write> = if filename.is_empty() {
                    Box::new(io::stdout())
                } else {
                    check_permitted(filename, permitted, true)?;
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode_0600()
                        .open(filename);
                    match f {
                        Ok(f) => Box::new(f),
                        Err(e) => return Ok(Transfer::ClientSide(e.to_string())),
                    }
                };
                copy_with_heartbeat(&mut r, &mut out, main)?;
                return Ok(Transfer::Done);
            }
            302 => match head.location {
                Some(l) => url = l,
                None => return Ok(Transfer::Failed("redirect without location".into())),
            },
            _ => return Ok(Transfer::Failed("Unhandled response code".into())),
        }
    }
    Ok(Transfer::Failed("too many redirects".into()))
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

fn http_put(
    opts: &ClientOptions,
    filename: &str,
    url: &str,
    permitted: &[PathBuf],
    main: &mut Conn,
    dbg: &mut DebugSink,
) -> Result<Transfer, Fail> {
    check_permitted(filename, permitted, false)?;
    let mut url = url.to_string();
    for _ in 0..10 {
        let (server, path) = parse_url(&url, &opts.server);
        let meta = match std::fs::metadata(filename) {
            Ok(m) => m,
            Err(_) => {
                return Ok(Transfer::ClientSide(format!(
                    "file '{filename}' does not exist"
                )))
            }
        };
        let content_length = if meta.is_file() {
            format!("\r\nContent-length: {}", meta.len())
        } else {
            String::new()
        };
        let mut file = match File::open(filename) {
            Ok(f) => f,
            Err(e) => return Ok(Transfer::Failed(e.to_string())),
        };
        let conn = match open_tcp(opts, &server, dbg) {
            Ok(c) => c,
            Err(Fail(m)) => return Ok(Transfer::Failed(m)),
        };
        dbg.log(&format!("PUTting to path [{path}]\n"));
        let mut r = BufReader::new(conn);
        let head = (|| {
            r.get_mut()
                .write_all(format!("PUT {path} HTTP/1.0{content_length}\r\n\r\n").as_bytes())?;
            r.get_mut().flush()?;
            read_head(&mut r)
        })();
        let head = match head {
            Ok(h) => h,
            Err(e) => return Ok(Transfer::Failed(e.to_string())),
        };
        match head.code {
            200 => {
                let mut conn = r.into_inner();
                if let Err(e) = copy_with_heartbeat(&mut file, &mut conn, main) {
                    return Ok(Transfer::Failed(e.to_string()));
                }
                return Ok(Transfer::Done);
            }
            302 => match head.location {
                Some(l) => url = l,
                None => return Ok(Transfer::Failed("redirect without location".into())),
            },
            _ => return Ok(Transfer::Failed("Unhandled response code".into())),
        }
    }
    Ok(Transfer::Failed("too many redirects".into()))
}

fn check_permitted(filename: &str, permitted: &[PathBuf], permit_cwd: bool) -> Result<(), Fail> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let requested = args::canonicalize(filename, &cwd);
    let ok = permitted.contains(&requested)
        || (permit_cwd && requested == args::canonicalize(".", &cwd));
    if ok {
        Ok(())
    } else {
        Err(Fail(format!(
            "File not permitted: Blocked upload/download of the file {filename}, which was \
             requested by the server. The file name was not present on the command line\n.\n"
        )))
    }
}

// ---------------------------------------------------------------------------
// The protocol loop

fn is_http(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes[..4].eq_ignore_ascii_case(b"HTTP")
}

/// The reference's `handle_unmarshal_failure`: an HTTP answer where the
/// protocol was expected is a server internal error.
fn unmarshal_failure(e: ProtocolError, conn: &mut Conn, argv0: &str) -> Fail {
    match e {
        ProtocolError::Eof(mut got) | ProtocolError::NotACliServer(mut got) if !got.is_empty() => {
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
            got.extend(rest);
            if is_http(&got) {
                Fail("Server internal error.\n".into())
            } else if got.starts_with(protocol::PREFIX) || got.len() < protocol::PREFIX.len() {
                Fail("Lost connection to the server.\n".into())
            } else {
                Fail(format!(
                    "Failed to contact a running management agent.\nTry specifying a server name and port.\n{}",
                    args::usage(argv0)
                ))
            }
        }
        ProtocolError::Eof(_) => Fail("Lost connection to the server.\n".into()),
        ProtocolError::Io(e) => Fail(format!("Error: {} (calling read )\n", strerror(&e))),
        other => Fail(format!("Unhandled exception\n{other}\n")),
    }
}

fn main_loop(
    conn: &mut Conn,
    opts: &ClientOptions,
    permitted: &[PathBuf],
    dbg: &mut DebugSink,
    argv0: &str,
) -> Result<i32, Fail> {
    let (smajor, sminor) = match protocol::read_version(conn) {
        Ok(v) => v,
        Err(ProtocolError::Eof(b)) if b.is_empty() => {
            return Err(Fail(
                "Unable to contact server. Please check server and port settings.\n".into(),
            ))
        }
        Err(e) => return Err(unmarshal_failure(e, conn, argv0)),
    };
    let msg = format!("Server has protocol version {smajor}.{sminor}. Client has {MAJOR}.{MINOR}");
    dbg.log(&format!("{msg}\n"));
    if smajor != MAJOR {
        return Err(Fail(format!(
            "Protocol version mismatch: {msg}.\nTry specifying a server name and port on the command-line.\n{}",
            args::usage(argv0)
        )));
    }
    protocol::write_version(conn)?;
    let stdout = io::stdout();
    let stderr = io::stderr();
    loop {
        let m = match protocol::read_message(conn) {
            Ok(m) => m,
            Err(e) => return Err(unmarshal_failure(e, conn, argv0)),
        };
        dbg.log(&format!("Read: {m}\n"));
        let cmd = match m {
            Message::Command(c) => c,
            other => {
                return Err(Fail(format!("Unexpected message from server: {other}")));
            }
        };
        match cmd {
            Command::Print(s) => {
                let mut o = stdout.lock();
                let _ = o.write_all(s.as_bytes());
                let _ = o.write_all(b"\n");
                let _ = o.flush();
            }
            Command::PrintStderr(s) => {
                let mut e = stderr.lock();
                let _ = e.write_all(s.as_bytes());
                let _ = e.flush();
            }
            Command::Debug(s) => dbg.log(&format!("debug from server: {s}\n")),
            Command::Error { code, params } => {
                let mut e = stderr.lock();
                let _ = write!(
                    e,
                    "Error code: {code}\nError parameters: {}\n",
                    params.join(", ")
                );
                let _ = e.flush();
            }
            Command::Exit(c) => return Ok(c),
            Command::Prompt => {
                let mut line = String::new();
                if io::stdin().lock().read_line(&mut line)? == 0 {
                    return Err(Fail("Lost connection to the server.\n".into()));
                }
                let line = line.strip_suffix('\n').unwrap_or(&line);
                protocol::write_blob(conn, line.as_bytes())?;
            }
            Command::Load(filename) => {
                check_permitted(&filename, permitted, false)?;
                match std::fs::read(&filename) {
                    Ok(data) => {
                        protocol::write_message(conn, &Response::Ok.into())?;
                        protocol::write_message(conn, &Blob::Chunk(data.len() as u32).into())
                            .and_then(|_| conn.write_all(&data))
                            .and_then(|_| protocol::write_message(conn, &Blob::End.into()))
                            .map_err(|_| {
                                Fail(format!(
                                    "Client Side error: Failed to upload file {filename}.\n"
                                ))
                            })?;
                    }
                    Err(_) => protocol::write_message(conn, &Response::Failed.into())?,
                }
            }
            Command::HttpGet { filename, path } => {
                let t = http_get(opts, &filename, &path, permitted, conn, dbg)?;
                if let Some(code) = finish_transfer(t, conn, dbg, "HttpGet")? {
                    return Ok(code);
                }
            }
            Command::HttpPut { filename, path } => {
                let t = http_put(opts, &filename, &path, permitted, conn, dbg)?;
                if let Some(code) = finish_transfer(t, conn, dbg, "HttpPut")? {
                    return Ok(code);
                }
            }
            Command::HttpConnect(path) => {
                dbg.log(&format!("HttpConnect {path}: not supported\n"));
                let _ = writeln!(
                    stderr.lock(),
                    "Interactive console connections are not supported by this xe client"
                );
                protocol::write_message(conn, &Response::Failed.into())?;
            }
        }
    }
}

/// Answers the server after a transfer; `Some(1)` ends the session.
fn finish_transfer(
    t: Transfer,
    conn: &mut Conn,
    dbg: &mut DebugSink,
    what: &str,
) -> Result<Option<i32>, Fail> {
    match t {
        Transfer::Done => {
            protocol::write_message(conn, &Response::Ok.into())?;
            Ok(None)
        }
        Transfer::ClientSide(m) => {
            protocol::write_message(conn, &Response::Failed.into())?;
            eprintln!("Operation failed. Error: {m}");
            Ok(Some(1))
        }
        Transfer::Failed(m) => {
            dbg.log(&format!("{what} failure: {m}\n"));
            protocol::write_message(conn, &Response::Failed.into())?;
            Ok(None)
        }
    }
}

fn main() {
    std::process::exit(run())
}

fn run() -> i32 {
    let mut all: Vec<String> = std::env::args().collect();
    let argv0 = if all.is_empty() {
        "xe".to_string()
    } else {
        all.remove(0)
    };
    if all.iter().any(|a| a == "-version") {
        println!("ThinCLI protocol: {MAJOR}.{MINOR}");
        return 0;
    }
    let rc = match std::env::var("HOME") {
        Ok(home) => match std::fs::read_to_string(Path::new(&home).join(".xe")) {
            Ok(text) => args::parse_rc(&text).unwrap_or_else(|m| {
                eprint!("{m}");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        },
        Err(_) => Vec::new(),
    };
    let extra = std::env::var("XE_EXTRA_ARGS").ok();
    let tp = std::env::var("TRACEPARENT").ok();
    let inv = match args::parse_client_args(&all, &rc, extra.as_deref(), tp.as_deref()) {
        Ok(i) => i,
        Err(ClientArgsError::Usage(m)) => {
            eprint!("{}{}", m.unwrap_or_default(), args::usage(&argv0));
            return 0;
        }
        Err(ClientArgsError::Fatal(m)) => {
            eprint!("{m}");
            return 1;
        }
    };
    let mut opts = inv.options;
    if let Some(pwf) = &opts.password_file {
        match args::read_password_file(pwf) {
            Ok((u, p)) => {
                opts.username = u;
                opts.password = p;
            }
            Err(m) => {
                eprint!("{m}");
                return 1;
            }
        }
    }
    let mut dbg = if opts.debug {
        DebugSink::Stderr
    } else if opts.debug_on_fail {
        DebugSink::Buffer(String::new())
    } else {
        DebugSink::Off
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let permitted = args::permitted_filenames(&inv.rest, &cwd);
    let status = if inv.rest.is_empty() {
        eprint!("{}", args::usage(&argv0));
        0
    } else {
        match session(&opts, &inv.rest, &permitted, &mut dbg, &argv0) {
            Ok(c) => c,
            Err(Fail(m)) => {
                eprint!("{m}");
                1
            }
        }
    };
    if let DebugSink::Buffer(b) = &dbg {
        if status != 0 {
            eprint!("\nDebug info:\n\n{b}");
        }
    }
    status
}

fn session(
    opts: &ClientOptions,
    rest: &[String],
    permitted: &[PathBuf],
    dbg: &mut DebugSink,
    argv0: &str,
) -> Result<i32, Fail> {
    let mut conn = open_main(opts, dbg)?;
    let body = args::request_body(rest, &opts.username, &opts.password);
    let baggage = std::env::var("BAGGAGE").ok();
    let req = args::http_request(&body, opts.traceparent.as_deref(), baggage.as_deref());
    conn.write_all(&req)
        .and_then(|_| conn.flush())
        .map_err(|e| Fail(format!("Error: {} (calling write )\n", strerror(&e))))?;
    main_loop(&mut conn, opts, permitted, dbg, argv0)
}
