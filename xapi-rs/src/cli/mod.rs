//! `POST /cli`: the server end of the thin CLI protocol (v0.2), using the
//! `xe` crate's codec, argument parsing and record rendering.
//!
//! As in the reference, the request is answered with no HTTP response: the
//! server writes the protocol greeting, then commands (`Print`,
//! `PrintStderr`, `Error`, `Exit`). Commands run through the API dispatch
//! with a session: the one given by `session_id=`, or one opened with the
//! `username=`/`password=` lines (PAM, as `session.login_with_password`) and
//! closed afterwards.

mod devices;
pub mod tables;
mod vm;

use crate::generated::errors::ErrorCode;
use crate::model::value::{Record, V};
use crate::model::{self, Generic};
use crate::rpc::wire::Call;
use crate::rpc::{dispatch, Ctx};
use std::sync::Arc;
use tables::{CliClass, Column};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use xe::args::{self, CommandLine};
use xe::protocol::{self, Command, Message};
use xe::render::{self, PrintVal, Printer};

/// A connection's first request, as far as it was read.
pub enum Sniffed {
    /// `POST /cli`: its body.
    Cli(Vec<u8>),
    /// Anything else: the bytes read so far, to replay to the HTTP server.
    Other(Vec<u8>),
}

const HEAD_LIMIT: usize = 64 * 1024;

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads just enough of a connection to tell a `/cli` request from others.
pub async fn sniff<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Sniffed> {
    const CLI: &[u8] = b"POST /cli";
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // Decide on the first 10 bytes.
    loop {
        let n = buf.len().min(CLI.len());
        if buf[..n] != CLI[..n] {
            return Ok(Sniffed::Other(buf));
        }
        if buf.len() > CLI.len() {
            if matches!(buf[CLI.len()], b' ' | b'/' | b'?') {
                break;
            }
            return Ok(Sniffed::Other(buf));
        }
        let k = s.read(&mut chunk).await?;
        if k == 0 {
            if buf.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before a request",
                ));
            }
            return Ok(Sniffed::Other(buf));
        }
        buf.extend_from_slice(&chunk[..k]);
    }
    // The head.
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > HEAD_LIMIT {
            return Err(std::io::Error::other("CLI request head too large"));
        }
        let k = s.read(&mut chunk).await?;
        if k == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "CLI request head cut short",
            ));
        }
        buf.extend_from_slice(&chunk[..k]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if len > protocol::MAX_BODY {
        return Err(std::io::Error::other("CLI request body too large"));
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let k = s.read(&mut chunk).await?;
        if k == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..k]);
    }
    body.truncate(len);
    Ok(Sniffed::Cli(body))
}

/// Runs the protocol on a connection whose `/cli` request was read.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ctx: Arc<Ctx>,
    mut s: S,
    body: Vec<u8>,
) {
    if let Err(e) = serve_inner(&ctx, &mut s, &body).await {
        tracing::debug!("cli: {e}");
    }
    let _ = s.shutdown().await;
}

async fn serve_inner<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ctx: &Arc<Ctx>,
    s: &mut S,
    body: &[u8],
) -> std::io::Result<()> {
    s.write_all(&protocol::version_bytes(protocol::MAJOR, protocol::MINOR))
        .await?;
    s.flush().await?;
    let mut greeting = vec![0u8; protocol::PREFIX.len() + 8];
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        s.read_exact(&mut greeting),
    )
    .await
    .map_err(|_| std::io::Error::other("no client greeting"))??;
    if greeting[..protocol::PREFIX.len()] != protocol::PREFIX[..] {
        return Err(std::io::Error::other("not a CLI client"));
    }
    let major = i32::from_le_bytes(greeting[27..31].try_into().unwrap_or([0; 4]));
    if major != protocol::MAJOR {
        return Err(std::io::Error::other("client protocol major mismatch"));
    }
    let text = String::from_utf8_lossy(body).to_string();
    let (cmds, code) = run(ctx, &text, &mut Client(Some(s))).await;
    let mut out = Vec::new();
    for c in cmds.into_iter().chain([Command::Exit(code)]) {
        out.extend(Message::Command(c).encode_frame());
    }
    s.write_all(&out).await?;
    s.flush().await
}

/// A connection the server can talk on while a command runs.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// The client of a running command, for the commands that ask the user
/// something (`None`: nobody to ask).
pub struct Client<'a>(pub Option<&'a mut dyn Duplex>);

/// How long a question waits for its answer before the command gives up.
const PROMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
/// The longest answer read.
const ANSWER_LIMIT: usize = 64 * 1024;

impl Client<'_> {
    /// The reference's `user_says_yes`: sends what the command printed so
    /// far (`pending`), "Type 'yes' to continue" and a `Prompt`, reads the
    /// answer the client sends as blobs, and prints "Aborted (you typed:
    /// '...')" unless it is yes (trimmed, any case).
    pub async fn user_says_yes(&mut self, pending: &mut Vec<Command>) -> CR<bool> {
        let Some(s) = self.0.as_mut() else {
            return Err(CliError::Failure(
                "no client to ask for confirmation".into(),
            ));
        };
        let io = |e: std::io::Error| CliError::Failure(format!("Protocol error: {e}"));
        pending.push(Command::Print("Type 'yes' to continue".into()));
        pending.push(Command::Prompt);
        let mut frames = Vec::new();
        for c in pending.drain(..) {
            frames.extend(Message::Command(c).encode_frame());
        }
        s.write_all(&frames).await.map_err(io)?;
        s.flush().await.map_err(io)?;
        let answer = tokio::time::timeout(PROMPT_TIMEOUT, read_answer(&mut **s))
            .await
            .map_err(|_| CliError::Failure("no answer to the prompt".into()))?
            .map_err(io)?;
        let yes = answer.trim().eq_ignore_ascii_case("yes");
        if !yes {
            pending.push(Command::Print(format!("Aborted (you typed: '{answer}')")));
        }
        Ok(yes)
    }
}

/// A prompt's answer: blob chunks (each frame followed by its bytes) up to
/// the end frame.
async fn read_answer(s: &mut dyn Duplex) -> std::io::Result<String> {
    let bad = |m: &str| std::io::Error::other(m.to_string());
    let mut data = Vec::new();
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await?;
        let len = usize::try_from(i32::from_le_bytes(len)).map_err(|_| bad("bad frame length"))?;
        if len > 64 {
            return Err(bad("frame too long for a blob"));
        }
        let mut frame = vec![0u8; len];
        s.read_exact(&mut frame).await?;
        match Message::decode(&frame).map_err(|e| bad(&e.to_string()))? {
            Message::Blob(protocol::Blob::Chunk(n)) => {
                let n = n as usize;
                if data.len() + n > ANSWER_LIMIT {
                    return Err(bad("answer too long"));
                }
                let start = data.len();
                data.resize(start + n, 0);
                s.read_exact(&mut data[start..]).await?;
            }
            Message::Blob(protocol::Blob::End) => break,
            _ => return Err(bad("expected the answer's blobs")),
        }
    }
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// Why a command failed, mapped to the reference's exception handler.
#[derive(Debug)]
pub enum CliError {
    /// An API error `[CODE, params...]`.
    Api(Vec<String>),
    /// OCaml `Failure`: reported as `INTERNAL_ERROR ["Failure: ..."]`.
    Failure(String),
    /// `Cli_failure` / `Record_failure`: `Error: ...`.
    Cli(String),
    /// A field name the record does not have (`CLI_failed_to_find_param`).
    MissingParam(String),
    /// A required parameter not given (`ParamNotFound`).
    ParamNotFound(String),
    /// `Unknown_command`.
    Unknown(String),
    /// `Multiple_failure`: the operation failed on these VMs (uuid, why).
    Multiple(Vec<(String, String)>),
}

impl From<Vec<String>> for CliError {
    fn from(v: Vec<String>) -> Self {
        CliError::Api(v)
    }
}

type CR<T> = Result<T, CliError>;

/// A known command.
pub struct CmdSpec {
    pub name: String,
    pub reqd: Vec<String>,
    pub optn: Vec<String>,
    pub help: String,
    pub standard: bool,
    /// Takes VM selectors (the reference's `Vm_selectors` flag).
    pub vm_selectors: bool,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The command table: generated commands of each CLI class (as the
/// reference's `make_param_funs`) and the hand-written ones.
pub fn commands() -> Vec<CmdSpec> {
    let mut out = vec![
        CmdSpec {
            name: "help".into(),
            reqd: vec![],
            optn: vec![],
            help: "Display help information.".into(),
            standard: true,
            vm_selectors: false,
        },
        CmdSpec {
            name: "host-cpu-info".into(),
            reqd: vec![],
            optn: s(&["uuid"]),
            help: "Lists information about the host's physical CPUs.".into(),
            standard: false,
            vm_selectors: false,
        },
        CmdSpec {
            name: "task-cancel".into(),
            reqd: s(&["uuid"]),
            optn: vec![],
            help: "Set a task to cancelling and return.".into(),
            standard: false,
            vm_selectors: false,
        },
    ];
    out.extend(vm::commands());
    out.extend(devices::commands());
    for cc in tables::CLI_CLASSES {
        let cols: Vec<Column> = tables::columns(cc)
            .into_iter()
            .filter(|c| c.flags & tables::HIDDEN == 0)
            .collect();
        let all: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
        let mut settable: Vec<String> = cols
            .iter()
            .filter(|c| c.settable())
            .map(|c| c.name.clone())
            .collect();
        settable.extend(
            cols.iter()
                .filter(|c| c.map_writable())
                .map(|c| format!("{}:", c.name)),
        );
        let addable = cols.iter().any(|c| c.map_writable() || c.set_writable());
        let clearable: Vec<String> = cols
            .iter()
            .filter(|c| c.settable() || c.access.is_set() || c.access.is_map())
            .map(|c| c.name.clone())
            .collect();
        let sm: Vec<String> = cols
            .iter()
            .filter(|c| c.access.is_set())
            .map(|c| format!("{}:contains", c.name))
            .collect();
        let n = |x: &str| format!("{}-{x}", cc.cli);
        let mut optn = s(&["params", "database:"]);
        optn.extend(all.clone());
        optn.extend(sm);
        if !settable.is_empty() {
            out.push(CmdSpec {
                name: n("param-set"),
                reqd: s(&["uuid"]),
                optn: settable,
                help: "Sets the parameter specified. If param-value is not given, the parameter is set to a null value. To set a (key,value) pair in a map parameter, use the syntax 'map-param:key=value'.".into(),
                standard: false,
                vm_selectors: false,
            });
        }
        out.push(CmdSpec {
            name: n("list"),
            reqd: vec![],
            optn,
            help: format!("Lists all the {}s, filtering on the optional arguments. To filter on map parameters, use the syntax 'map-param:key=value'", cc.cli),
            standard: matches!(cc.cli, "vm" | "network" | "sr"),
            vm_selectors: false,
        });
        out.push(CmdSpec {
            name: n("param-list"),
            reqd: s(&["uuid"]),
            optn: s(&["database:"]),
            help: "Lists all the parameters of the object specified by the uuid.".into(),
            standard: false,
            vm_selectors: false,
        });
        out.push(CmdSpec {
            name: n("param-get"),
            reqd: s(&["uuid", "param-name"]),
            optn: s(&["param-key", "database:"]),
            help: "Gets the parameter specified of the object. If the parameter is a map of key=value pairs, use 'param-key=<key>' to get the value associated with a particular key.".into(),
            standard: false,
            vm_selectors: false,
        });
        if addable {
            out.push(CmdSpec {
                name: n("param-add"),
                reqd: s(&["uuid", "param-name"]),
                optn: s(&["param-key"]),
                help: "Adds to a set or map parameter. If the parameter is a set, use param-key=<key to add>. If the parameter is a map, pass the values to add as 'key=value' pairs.".into(),
                standard: false,
                vm_selectors: false,
            });
            out.push(CmdSpec {
                name: n("param-remove"),
                reqd: s(&["uuid", "param-name", "param-key"]),
                optn: vec![],
                help: "Removes a member or a key,value pair from a set/map respectively.".into(),
                standard: false,
                vm_selectors: false,
            });
        }
        if !clearable.is_empty() {
            out.push(CmdSpec {
                name: n("param-clear"),
                reqd: s(&["uuid", "param-name"]),
                optn: vec![],
                help: format!(
                    "Clears the specified parameter (param-name can be {}).",
                    clearable.join(",")
                ),
                standard: false,
                vm_selectors: false,
            });
        }
    }
    out
}

/// Runs one command line: the commands to send and the exit status.
pub async fn run(ctx: &Arc<Ctx>, body: &str, client: &mut Client<'_>) -> (Vec<Command>, i32) {
    let (session, lines) = args::parse_body(body);
    let cl = match args::parse_commandline(&lines) {
        Ok(cl) => cl,
        Err(e) => return (render::syntax_error(&e.0), 1),
    };
    let mut printer = Printer::new(cl.minimal());
    let mut out = Vec::new();
    let res = run_cl(ctx, session, &cl, &mut printer, &mut out, client).await;
    match res {
        Ok(()) => {
            out.extend(printer.flush());
            (out, 0)
        }
        Err(e) => {
            out.extend(error_commands(ctx, &cl, e));
            (out, 1)
        }
    }
}

/// `Cli_util.ref_convert`: a reference becomes `uuid (name)` where known.
fn ref_convert(ctx: &Ctx, x: &str) -> String {
    if !x.starts_with("OpaqueRef:") {
        return x.to_string();
    }
    for c in model::CLASSES.iter().filter(|c| c.in_db) {
        if let Some(rec) = ctx.db.get(c.name, x) {
            let uuid = rec.get("uuid").and_then(V::as_str).unwrap_or("");
            return match rec.get("name_label").and_then(V::as_str) {
                Some(n) => format!("{uuid} ({n})"),
                None => uuid.to_string(),
            };
        }
    }
    x.to_string()
}

fn server_error(ctx: &Ctx, code: &str, params: &[String]) -> Vec<Command> {
    let params: Vec<String> = params.iter().map(|p| ref_convert(ctx, p)).collect();
    let described = model::error_def(code)
        .filter(|d| !d.doc.is_empty())
        .map(|d| {
            let mut lines = Vec::new();
            let n = d.params.len().max(params.len());
            for i in 0..n {
                match (d.params.get(i), params.get(i)) {
                    (Some(t), Some(v)) => lines.push(format!("{t}: {v}")),
                    (None, Some(v)) => lines.push(format!("<extra>: {v}")),
                    (Some(t), None) => lines.push(format!("{t}: <unknown>")),
                    (None, None) => {}
                }
            }
            (d.doc.to_string(), lines)
        });
    render::server_error(code, &params, described)
}

fn error_commands(ctx: &Ctx, cl: &CommandLine, e: CliError) -> Vec<Command> {
    let _ = cl;
    match e {
        CliError::Api(v) => {
            let code = v.first().cloned().unwrap_or_default();
            if code == ErrorCode::SessionAuthenticationFailed.code() {
                render::authentication_failed(v.get(1).map_or("", String::as_str))
            } else {
                server_error(ctx, &code, &v[1.min(v.len())..])
            }
        }
        CliError::Failure(m) => server_error(
            ctx,
            ErrorCode::InternalError.code(),
            &[format!("Failure: {m}")],
        ),
        CliError::Cli(m) => render::other_error(&m),
        CliError::MissingParam(n) => server_error(ctx, "Missing parameter", &[n]),
        CliError::ParamNotFound(n) => render::param_not_found(&n),
        CliError::Unknown(n) => render::unknown_command(&n),
        CliError::Multiple(fails) => fails
            .into_iter()
            .map(|(uuid, msg)| Command::Print(format!("operation failed on {uuid}: {msg}")))
            .collect(),
    }
}

/// One API call with the session.
/// The API method implementing a generic operation on a CLI class's field.
fn generic_method(cc: &CliClass, g: Generic) -> CR<String> {
    model::class(cc.class)
        .and_then(|c| c.messages.iter().find(|m| m.generic == Some(g)))
        .map(|m| format!("{}.{}", cc.class, m.name))
        .ok_or_else(|| CliError::Failure(format!("{} has no {g:?}", cc.class)))
}

async fn call(ctx: &Arc<Ctx>, method: &str, params: Vec<V>) -> CR<V> {
    dispatch(
        ctx,
        Call {
            method: method.to_string(),
            params,
        },
    )
    .await
    .map_err(CliError::Api)
}

async fn run_cl(
    ctx: &Arc<Ctx>,
    session: Option<String>,
    cl: &CommandLine,
    p: &mut Printer,
    out: &mut Vec<Command>,
    client: &mut Client<'_>,
) -> CR<()> {
    let table = commands();
    let spec = table
        .iter()
        .find(|c| c.name == cl.cmdname)
        .ok_or_else(|| CliError::Unknown(cl.cmdname.clone()))?;
    for r in &spec.reqd {
        if cl.get(r).is_none() {
            return Err(CliError::ParamNotFound(r.clone()));
        }
    }
    if spec.name == "help" {
        help(cl, &table, p, out);
        return Ok(());
    }
    let (sref, owned) = match session {
        Some(sid) => (sid, false),
        None => {
            let uname = cl.get("username").unwrap_or("");
            let pwd = cl.get("password").unwrap_or("");
            let r = call(
                ctx,
                "session.login_with_password",
                vec![V::str(uname), V::str(pwd), V::str("1.0"), V::str("cli")],
            )
            .await?;
            (r.as_str().unwrap_or("").to_string(), true)
        }
    };
    let res = exec(ctx, &sref, spec, cl, p, out, client).await;
    if owned {
        let _ = call(ctx, "session.logout", vec![V::S(sref)]).await;
    }
    res
}

fn help(cl: &CommandLine, table: &[CmdSpec], p: &mut Printer, out: &mut Vec<Command>) {
    let asked: Vec<&str> = cl
        .params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !["server", "username", "password", "port", "minimal", "all"].contains(k))
        .collect();
    if !asked.is_empty() {
        for name in asked {
            match table.iter().find(|c| c.name == name) {
                Some(c) => {
                    let mut optn = c.optn.clone();
                    let mut desc = c.help.clone();
                    if c.vm_selectors {
                        optn.push("<vm-selectors>".into());
                        desc.push_str(vm::SELECTORS_INFO);
                    }
                    out.extend(p.print(PrintVal::Table(vec![vec![
                        ("command name        ".into(), c.name.clone()),
                        ("reqd params     ".into(), c.reqd.join(", ")),
                        ("optional params ".into(), optn.join(", ")),
                        ("description     ".into(), desc),
                    ]])))
                }
                None => {
                    out.extend(p.print(PrintVal::List(vec![format!("Unknown command '{name}'")])))
                }
            }
        }
        return;
    }
    let argv0 = "xe";
    let usage = format!(
        "Usage:
  {argv0} <command>
    [ -s <server> ]            XenServer host
    [ -p <port> ]              XenServer port number
    [ -u <username> -pw <password> | -pwf <password file> ]
                               User authentication (password or file)
    [ --nossl ]                Disable SSL/TLS
    [ --debug ]                Enable debug output
    [ --debug-on-fail ]        Enable debug output only on failure
    [ --traceparent <value> ]  Distributed tracing context
    [ <other arguments> ... ]  Command-specific options

To get help on a specific command:
  {argv0} help <command>

"
    );
    let mut names: Vec<&CmdSpec> = table.iter().collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    if cl.get_bool("all") {
        let all: Vec<String> = names.iter().map(|c| c.name.clone()).collect();
        if cl.minimal() {
            out.extend(p.print(PrintVal::List(all)));
            return;
        }
        let (host, other): (Vec<String>, Vec<String>) =
            all.into_iter().partition(|n| n.starts_with("host-"));
        let (vm, other): (Vec<String>, Vec<String>) =
            other.into_iter().partition(|n| n.starts_with("vm-"));
        out.extend(p.print(PrintVal::List(vec![format!(
            "{usage}Full command list\n-----------------\n"
        )])));
        out.extend(p.print(PrintVal::List(make_list(&host))));
        out.extend(p.print(PrintVal::List(make_list(&[String::new()]))));
        out.extend(p.print(PrintVal::List(make_list(&vm))));
        out.extend(p.print(PrintVal::List(make_list(&[String::new()]))));
        out.extend(p.print(PrintVal::List(make_list(&other))));
    } else {
        let std: Vec<String> = names
            .iter()
            .filter(|c| c.standard)
            .map(|c| c.name.clone())
            .collect();
        if cl.minimal() {
            out.extend(p.print(PrintVal::List(std)));
            return;
        }
        out.extend(p.print(PrintVal::List(vec![format!(
            "{usage}To get a full listing of commands:\n  {argv0} help --all\n\nCommon command list\n-------------------\n"
        )])));
        out.extend(p.print(PrintVal::List(make_list(&std))));
    }
}

/// The reference's `make_list`: names joined with `, ` in lines of at most
/// about 74 characters, indented by 4.
fn make_list(l: &[String]) -> Vec<String> {
    let indent = "    ";
    let mut lines = Vec::new();
    let Some(first) = l.first() else {
        return vec![indent.to_string()];
    };
    let mut cur = format!("{indent}{first}");
    for c in &l[1..] {
        if cur.len() + c.len() > 74 {
            lines.push(std::mem::replace(&mut cur, format!("{indent}{c}")));
        } else {
            cur = format!("{cur}, {c}");
        }
    }
    lines.push(cur);
    lines
}

fn sv(x: &str) -> V {
    V::str(x)
}

/// A CLI class's objects: `(ref, record)`, host CPUs in CPU order.
async fn all_records(ctx: &Arc<Ctx>, sref: &str, cc: &CliClass) -> CR<Vec<(String, Record)>> {
    let v = call(
        ctx,
        &format!("{}.get_all_records", cc.class),
        vec![sv(sref)],
    )
    .await?;
    let mut out: Vec<(String, Record)> = match v {
        V::M(m) => m
            .into_iter()
            .filter_map(|(r, v)| match v {
                V::M(rec) => Some((r, rec)),
                _ => None,
            })
            .collect(),
        _ => vec![],
    };
    if cc.class == "host_cpu" {
        out.sort_by_key(|(_, r)| match r.get("number") {
            Some(V::I(n)) => *n,
            _ => 0,
        });
    }
    Ok(out)
}

async fn by_uuid(ctx: &Arc<Ctx>, sref: &str, class: &str, uuid: &str) -> CR<(String, Record)> {
    let r = call(
        ctx,
        &format!("{class}.get_by_uuid"),
        vec![sv(sref), sv(uuid)],
    )
    .await?;
    let r = r.as_str().unwrap_or("").to_string();
    let rec = call(ctx, &format!("{class}.get_record"), vec![sv(sref), sv(&r)]).await?;
    match rec {
        V::M(m) => Ok((r, m)),
        _ => Err(CliError::Failure("bad record".into())),
    }
}

async fn exec(
    ctx: &Arc<Ctx>,
    sref: &str,
    spec: &CmdSpec,
    cl: &CommandLine,
    p: &mut Printer,
    out: &mut Vec<Command>,
    client: &mut Client<'_>,
) -> CR<()> {
    let name = spec.name.as_str();
    match name {
        "host-cpu-info" => {
            let host = match cl.get("uuid") {
                Some(u) => by_uuid(ctx, sref, "host", u).await?.0,
                None => ctx.host_ref.clone(),
            };
            let info = call(ctx, "host.get_cpu_info", vec![sv(sref), sv(&host)]).await?;
            let pairs: Vec<(String, String)> = match info {
                V::M(m) => m.into_iter().map(|(k, v)| (k, v.to_plain())).collect(),
                _ => vec![],
            };
            out.extend(p.print(PrintVal::Table(vec![pairs])));
            return Ok(());
        }
        "task-cancel" => {
            let (r, _) = by_uuid(ctx, sref, "task", cl.get("uuid").unwrap_or("")).await?;
            call(ctx, "task.cancel", vec![sv(sref), sv(&r)]).await?;
            return Ok(());
        }
        _ => {}
    }
    if let Some(res) = vm::exec(ctx, sref, name, cl, p, out, client).await {
        return res;
    }
    if let Some(res) = devices::exec(ctx, sref, name, cl, p, out).await {
        return res;
    }
    let (cc, op) = tables::CLI_CLASSES
        .iter()
        .filter_map(|cc| {
            name.strip_prefix(cc.cli)
                .and_then(|r| r.strip_prefix('-'))
                .map(|op| (cc, op))
        })
        .find(|(_, op)| {
            matches!(
                *op,
                "list"
                    | "param-list"
                    | "param-get"
                    | "param-set"
                    | "param-add"
                    | "param-remove"
                    | "param-clear"
            )
        })
        .ok_or_else(|| CliError::Unknown(name.to_string()))?;
    let cols = tables::columns(cc);
    let db = ctx.db.clone();
    let fields_of = |rec: &Record| tables::record_fields(&db, &cols, rec);
    match op {
        "list" => {
            let filters: Vec<(String, String)> = cc
                .filter
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(cl.filter_params())
                .collect();
            // Only the columns shown or filtered on are worked out (a list
            // of 1,000 VMs would otherwise render every field of each), and
            // an expensive one only if filtered on: a list prints
            // `<expensive field>` in its place.
            let shown_names = render::choose_params(cl.get("params"), cc.list_defaults);
            let filtered = |c: &tables::Column| {
                filters.iter().any(|(k, _)| {
                    k == &c.name || k.split_once(':').is_some_and(|(b, _)| b == c.name)
                })
            };
            let list_cols: Vec<tables::Column> = cols
                .iter()
                .filter(|c| shown_names.is_empty() || shown_names.contains(&c.name) || filtered(c))
                .map(|c| {
                    let mut c = c.clone();
                    if c.flags & tables::EXPENSIVE != 0 && !filtered(&c) {
                        c.derive = None;
                        c.flags |= tables::COMPUTED;
                    }
                    c
                })
                .collect();
            let mut recs: Vec<Vec<render::Field>> = all_records(ctx, sref, cc)
                .await?
                .iter()
                .map(|(_, r)| tables::record_fields(&db, &list_cols, r))
                .collect();
            if !cl.get_bool("all") {
                for (k, v) in &filters {
                    recs.retain(|r| render::matches_filter(r, k, v));
                }
            }
            let t = render::list_table(&recs, cl.get("params"), cc.list_defaults);
            out.extend(p.print(PrintVal::Table(t)));
        }
        "param-list" => {
            let (_, rec) = by_uuid(ctx, sref, cc.class, cl.get("uuid").unwrap_or("")).await?;
            out.extend(p.print(PrintVal::Table(render::param_list(&fields_of(&rec)))));
        }
        "param-get" => {
            let (_, rec) = by_uuid(ctx, sref, cc.class, cl.get("uuid").unwrap_or("")).await?;
            let pname = cl.get("param-name").unwrap_or("");
            match render::param_get(&fields_of(&rec), pname, cl.get("param-key")) {
                Ok(v) => out.extend(p.print(PrintVal::List(vec![v]))),
                Err(None) => return Err(CliError::MissingParam(pname.to_string())),
                Err(Some(m)) => return Err(CliError::Failure(m)),
            }
        }
        "param-set" => {
            let (r, rec) = by_uuid(ctx, sref, cc.class, cl.get("uuid").unwrap_or("")).await?;
            let fields = fields_of(&rec);
            for (k, v) in &cl.params {
                if k == "uuid" || args::STD_PARAMS.contains(&k.as_str()) {
                    continue;
                }
                param_set_one(ctx, sref, cc, &cols, &fields, &r, k, v).await?;
            }
        }
        "param-add" | "param-remove" => {
            let (r, rec) = by_uuid(ctx, sref, cc.class, cl.get("uuid").unwrap_or("")).await?;
            let fields = fields_of(&rec);
            let pname = cl.get("param-name").unwrap_or("");
            let col = cols
                .iter()
                .find(|c| c.name == pname)
                .ok_or_else(|| CliError::MissingParam(pname.to_string()))?;
            let f = fields.iter().find(|f| f.name == pname);
            let dm = col.field.name;
            let add = op == "param-add";
            if add {
                if col.set_writable() {
                    let key = cl.get("param-key").ok_or_else(|| {
                        CliError::Failure("When adding a key to a set, use the syntax: *-param-add param-name=<name> param-key=<key>".into())
                    })?;
                    call(
                        ctx,
                        &generic_method(cc, Generic::Add(dm))?,
                        vec![sv(sref), sv(&r), sv(key)],
                    )
                    .await?;
                } else if col.map_writable() {
                    for (k, v) in cl.params.iter().filter(|(k, _)| {
                        !["uuid", "param-name", "param-key"].contains(&k.as_str())
                            && !args::STD_PARAMS.contains(&k.as_str())
                    }) {
                        call(
                            ctx,
                            &generic_method(cc, Generic::AddTo(dm))?,
                            vec![sv(sref), sv(&r), sv(k), sv(v)],
                        )
                        .await?;
                    }
                } else if col.access.is_set() || col.access.is_map() {
                    return Err(CliError::Failure("Parameter is read-only".into()));
                } else {
                    return Err(CliError::Failure(
                        "Can only add to parameters of type Set or Map".into(),
                    ));
                }
            } else {
                let key = cl.get("param-key").unwrap_or("");
                if col.set_writable() {
                    if !f
                        .and_then(|f| f.set.as_ref())
                        .is_some_and(|s| s.iter().any(|x| x == key))
                    {
                        return Err(CliError::Failure(format!("Key {key} is not in the set")));
                    }
                } else if col.map_writable() {
                    if !f
                        .and_then(|f| f.map.as_ref())
                        .is_some_and(|m| m.iter().any(|(k, _)| k == key))
                    {
                        return Err(CliError::Failure(format!("Key {key} is not in map")));
                    }
                } else if col.access.is_set() || col.access.is_map() {
                    return Err(CliError::Failure(
                        "Cannot remove parameters from read-only map".into(),
                    ));
                } else {
                    return Err(CliError::Failure(
                        "Can only remove from parameters of type Set or Map".into(),
                    ));
                }
                let g = if col.set_writable() {
                    Generic::Remove(dm)
                } else {
                    Generic::RemoveFrom(dm)
                };
                call(
                    ctx,
                    &generic_method(cc, g)?,
                    vec![sv(sref), sv(&r), sv(key)],
                )
                .await?;
            }
        }
        "param-clear" => {
            let (r, rec) = by_uuid(ctx, sref, cc.class, cl.get("uuid").unwrap_or("")).await?;
            let pname = cl.get("param-name").unwrap_or("");
            let col = cols
                .iter()
                .find(|c| c.name == pname && c.flags & tables::HIDDEN == 0)
                .ok_or_else(|| CliError::MissingParam(pname.to_string()))?;
            let f = fields_of(&rec).into_iter().find(|f| f.name == pname);
            let dm = col.field.name;
            // As the reference's p_clear: remove each member of a writable
            // set or map, set a plain field to "", else refuse.
            if col.set_writable() {
                let members = f.and_then(|f| f.set).unwrap_or_default();
                for m in members {
                    call(
                        ctx,
                        &generic_method(cc, Generic::Remove(dm))?,
                        vec![sv(sref), sv(&r), sv(&m)],
                    )
                    .await?;
                }
            } else if col.map_writable() {
                let keys = f.and_then(|f| f.map).unwrap_or_default();
                for (k, _) in keys {
                    call(
                        ctx,
                        &generic_method(cc, Generic::RemoveFrom(dm))?,
                        vec![sv(sref), sv(&r), sv(&k)],
                    )
                    .await?;
                }
            } else if col.settable() && col.via.is_none() {
                let value = tables::parse_value(&ctx.db, pname, &col.field.ty, "")
                    .map_err(|_| CliError::Failure("Cannot clear this parameter".into()))?;
                call(
                    ctx,
                    &generic_method(cc, Generic::Set(dm))?,
                    vec![sv(sref), sv(&r), value],
                )
                .await
                .map_err(|_| CliError::Failure("Cannot clear this parameter".into()))?;
            } else {
                return Err(CliError::Failure("Can only clear RW parameters".into()));
            }
        }
        _ => return Err(CliError::Unknown(name.to_string())),
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn param_set_one(
    ctx: &Arc<Ctx>,
    sref: &str,
    cc: &CliClass,
    cols: &[Column],
    fields: &[render::Field],
    r: &str,
    k: &str,
    v: &str,
) -> CR<()> {
    if let Some(col) = cols.iter().find(|c| c.name == k) {
        let dm = col.field.name;
        if col.settable() && col.via.is_none() {
            let value = if col.flags & tables::BYTES != 0 {
                V::I(vm::bytes_of_string(k, v)?)
            } else {
                tables::parse_value(&ctx.db, k, &col.field.ty, v).map_err(CliError::Failure)?
            };
            call(
                ctx,
                &generic_method(cc, Generic::Set(dm))?,
                vec![sv(sref), sv(r), value],
            )
            .await?;
            return Ok(());
        }
        if col.map_writable() || col.set_writable() {
            return Err(CliError::Failure(format!(
                "Field '{k}' is a map or set. use the 'name:key=value' syntax."
            )));
        }
        return Err(CliError::Failure(format!("Field '{k}' is read-only.")));
    }
    let (fname, key) = k
        .split_once(':')
        .ok_or_else(|| CliError::MissingParam(k.to_string()))?;
    let col = cols
        .iter()
        .find(|c| c.name == fname)
        .ok_or_else(|| CliError::MissingParam(fname.to_string()))?;
    if col.access.is_set() {
        return Err(CliError::Failure("Cannot param-set on set fields".into()));
    }
    if !col.access.is_map() {
        return Err(CliError::MissingParam(k.to_string()));
    }
    if !col.map_writable() {
        return Err(CliError::Failure(format!(
            "Map field '{fname}' is read-only."
        )));
    }
    let dm = col.field.name;
    let present = fields
        .iter()
        .find(|f| f.name == fname)
        .and_then(|f| f.map.as_ref())
        .is_some_and(|m| m.iter().any(|(mk, _)| mk == key));
    if present {
        call(
            ctx,
            &generic_method(cc, Generic::RemoveFrom(dm))?,
            vec![sv(sref), sv(r), sv(key)],
        )
        .await?;
    }
    call(
        ctx,
        &generic_method(cc, Generic::AddTo(dm))?,
        vec![sv(sref), sv(r), sv(key), sv(v)],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_list_wraps() {
        let names: Vec<String> = (0..20).map(|i| format!("command-{i:02}")).collect();
        let lines = make_list(&names);
        assert!(lines.iter().all(|l| l.len() <= 80 && l.starts_with("    ")));
        assert_eq!(lines.join(", ").matches("command-").count(), 20);
    }

    #[test]
    fn table_has_the_generated_commands() {
        let names: Vec<String> = commands().into_iter().map(|c| c.name).collect();
        for n in [
            "host-list",
            "host-param-list",
            "host-param-get",
            "host-param-set",
            "host-cpu-list",
            "host-cpu-param-get",
            "pool-param-add",
            "pool-param-remove",
            "task-list",
            "task-cancel",
            "vm-list",
            "vm-param-clear",
            "template-list",
            "snapshot-list",
            "vbd-param-set",
            "vif-param-add",
            "vdi-list",
            "sr-list",
            "pbd-list",
            "network-param-set",
            "pif-list",
            "console-list",
            "sm-list",
        ] {
            assert!(names.iter().any(|x| x == n), "{n}");
        }
        // host_cpu has nothing writable the CLI shows.
        assert!(!names.iter().any(|x| x == "host-cpu-param-set"));
        // sm has nothing writable either (records.ml's sm_record).
        assert!(!names.iter().any(|x| x == "sm-param-set"));
    }
}
