//! Black-box tests: the real `xe` binary against an in-process fake `/cli`
//! server that speaks the server side of `xe::protocol`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command as Proc, Output, Stdio};
use std::thread::{self, JoinHandle};

use xe::args::{parse_body, parse_commandline};
use xe::protocol::{Command, ServerConn};
use xe::render::{self, Field, PrintVal, Printer};

/// What the fake server saw.
struct Seen {
    head: String,
    body: String,
}

/// Serves one `/cli` request with `handler`, which gets the parsed command
/// line and returns the commands to send (the last should be `Exit`).
fn serve_once<F>(handler: F) -> (u16, JoinHandle<Seen>)
where
    F: FnOnce(&xe::args::CommandLine, &mut ServerConn<TcpStream>) -> Vec<Command> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            head.push_str(&line);
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        let body = String::from_utf8(body).unwrap();
        let (_, args) = parse_body(&body);
        let mut conn = ServerConn::new(stream);
        assert_eq!(conn.handshake().unwrap(), (0, 2));
        let cmds = match parse_commandline(&args) {
            Ok(cl) => handler(&cl, &mut conn),
            Err(e) => {
                let mut v = render::syntax_error(&e.0);
                v.push(Command::Exit(1));
                v
            }
        };
        let _ = conn.send_all(cmds);
        Seen { head, body }
    });
    (port, h)
}

fn home() -> PathBuf {
    let d = std::env::temp_dir().join(format!("xe-it-home-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn xe(args: &[&str]) -> Output {
    xe_in(args, None)
}

fn xe_in(args: &[&str], cwd: Option<&std::path::Path>) -> Output {
    let mut p = Proc::new(env!("CARGO_BIN_EXE_xe"));
    p.args(args)
        .env("HOME", home())
        .env("XE_UNIX_SOCKET", "/nonexistent/xe-test-socket")
        .env_remove("XE_EXTRA_ARGS")
        .env_remove("TRACEPARENT")
        .env_remove("BAGGAGE")
        .stdin(Stdio::null());
    if let Some(d) = cwd {
        p.current_dir(d);
    }
    p.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn print_and_request_shape() {
    let (port, h) = serve_once(|cl, _| {
        assert_eq!(cl.cmdname, "pool-list");
        vec![Command::Print("hello world".into()), Command::Exit(0)]
    });
    let out = xe(&[
        "pool-list",
        "-s",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-u",
        "root",
        "-pw",
        "secret",
        "--minimal",
        "other-config:k=v",
    ]);
    let seen = h.join().unwrap();
    assert_eq!(text(&out.stdout), "hello world\n");
    assert_eq!(text(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        seen.head.starts_with("POST /cli HTTP/1.0\r\n"),
        "{}",
        seen.head
    );
    assert!(seen.head.contains("\r\nUser-agent: xe-cli/Unix/0.2\r\n"));
    assert!(seen.head.contains("\r\noriginator: cli\r\n"));
    assert_eq!(
        seen.body,
        "pool-list\n--minimal\nother-config:k=v\nusername=root\npassword=secret"
    );
}

#[test]
fn api_error_and_exit_code() {
    let (port, h) = serve_once(|_, _| {
        let mut v = vec![Command::PrintStderr("partial\n".into())];
        v.extend(render::server_error(
            "VM_BAD_POWER_STATE",
            &["OpaqueRef:1".into(), "halted".into(), "running".into()],
            None,
        ));
        v.push(Command::Exit(1));
        v
    });
    let out = xe(&["vm-start", "-s", "127.0.0.1", "-p", &port.to_string()]);
    let seen = h.join().unwrap();
    assert!(seen.body.ends_with("username=root\npassword=null"));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "partial\nError code: VM_BAD_POWER_STATE\nError parameters: OpaqueRef:1, halted, running\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn syntax_error_from_server() {
    let (port, h) = serve_once(|_, _| unreachable!());
    let out = xe(&["name-label=x", "-s", "127.0.0.1", "-p", &port.to_string()]);
    h.join().unwrap();
    assert_eq!(
        text(&out.stderr),
        "Syntax error: \nFor usage run: 'xe help'\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

fn cpu(uuid: &str, n: u32) -> Vec<Field> {
    vec![
        Field::ro("uuid", uuid),
        Field::ro("host-uuid", "h"),
        Field::ro("number", n.to_string()),
        Field::ro("vendor", "GenuineIntel"),
        Field::ro("speed", "2660"),
        Field::ro("model", "23"),
        Field::ro("family", "6"),
        Field::ro("modelname", "Intel(R) Core(TM)2 Quad CPU @ 2.66GHz"),
        Field::ro("stepping", "7"),
        Field::ro("flags", "fpu de tsc"),
        Field::ro("utilisation", "0.5").expensive(),
    ]
}

fn host_cpu_list(cl: &xe::args::CommandLine) -> Vec<Command> {
    let records = vec![cpu("b37e", 0), cpu("c48f", 1)];
    let table = render::list_table(
        &records,
        cl.get("params"),
        &["uuid", "number", "vendor", "speed", "utilisation"],
    );
    let mut p = Printer::new(cl.minimal());
    let mut v = p.print(PrintVal::Table(table));
    v.extend(p.flush());
    v.push(Command::Exit(0));
    v
}

#[test]
fn params_output() {
    let (port, h) = serve_once(|cl, _| host_cpu_list(cl));
    let out = xe(&[
        "host-cpu-list",
        "-s",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "params=uuid,number,vendor,modelname,stepping,flags",
    ]);
    h.join().unwrap();
    let expected = "\
uuid ( RO)         : b37e
       number ( RO): 0
       vendor ( RO): GenuineIntel
    modelname ( RO): Intel(R) Core(TM)2 Quad CPU @ 2.66GHz
     stepping ( RO): 7
        flags ( RO): fpu de tsc


uuid ( RO)         : c48f
       number ( RO): 1
       vendor ( RO): GenuineIntel
    modelname ( RO): Intel(R) Core(TM)2 Quad CPU @ 2.66GHz
     stepping ( RO): 7
        flags ( RO): fpu de tsc


";
    assert_eq!(text(&out.stdout), expected);
    assert_eq!(text(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn minimal_output() {
    let (port, h) = serve_once(|cl, _| host_cpu_list(cl));
    let out = xe(&[
        "host-cpu-list",
        "--minimal",
        "-s",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]);
    h.join().unwrap();
    assert_eq!(text(&out.stdout), "b37e,c48f\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn load_permitted_file() {
    let dir = home().join("load");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in.txt"), b"file contents").unwrap();
    let (port, h) = serve_once(|cl, conn| {
        let name = cl.get("filename").unwrap().to_string();
        let data = conn.load(&name, 1 << 20).unwrap();
        let forbidden = conn.load("/etc/shadow", 1 << 20);
        assert!(
            forbidden.is_err(),
            "client must refuse files not on its command line"
        );
        vec![
            Command::Print(String::from_utf8(data.unwrap()).unwrap()),
            Command::Exit(0),
        ]
    });
    let out = xe_in(
        &[
            "blob-put",
            "filename=in.txt",
            "-s",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ],
        Some(&dir),
    );
    h.join().unwrap();
    // The first Load succeeds; the second makes the client stop with the
    // reference's "File not permitted" message.
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr)
            .starts_with("File not permitted: Blocked upload/download of the file /etc/shadow"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn connection_refused() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = xe(&["vm-list", "-s", "127.0.0.1", "-p", &port.to_string()]);
    assert_eq!(
        text(&out.stderr),
        "Error: Connection refused (calling connect )\n"
    );
    assert_eq!(out.status.code(), Some(1));

    // Over TLS (any server but 127.0.0.1) the reference goes through
    // stunnel and reports an unreachable server this way.
    let out = xe(&["vm-list", "-s", "localhost", "-p", &port.to_string()]);
    assert_eq!(
        text(&out.stderr),
        "Unable to contact server. Please check server and port settings.\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn not_a_cli_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
    });
    let out = xe(&["vm-list", "-s", "127.0.0.1", "-p", &port.to_string()]);
    h.join().unwrap();
    assert_eq!(text(&out.stderr), "Server internal error.\n");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn version_and_usage() {
    let out = xe(&["-version"]);
    assert_eq!(text(&out.stdout), "ThinCLI protocol: 0.2\n");
    assert_eq!(out.status.code(), Some(0));
    let out = xe(&[]);
    assert!(text(&out.stderr).starts_with("Usage:\n"));
    assert_eq!(out.status.code(), Some(0));
}

/// `HttpGet` to a path on the same server: the client opens a second
/// connection, sends `GET path HTTP/1.0`, writes the body to the file (or
/// stdout when the filename is empty) and answers `OK`.
#[test]
fn http_get_to_stdout_and_file() {
    let dir = home().join("get");
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join("out.bin"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        let mut conn = ServerConn::new(stream);
        conn.handshake().unwrap();
        let mut requests = Vec::new();
        for filename in ["", "out.bin"] {
            conn.send(Command::HttpGet {
                filename: filename.into(),
                path: "/export?uuid=1".into(),
            })
            .unwrap();
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut buf).unwrap();
                req.push(buf[0]);
            }
            requests.push(String::from_utf8(req).unwrap());
            s.write_all(
                b"HTTP/1.0 200 OK\r\ncontent-type: application/octet-stream\r\n\r\nPAYLOAD",
            )
            .unwrap();
            drop(s);
            assert_eq!(conn.read_response().unwrap(), xe::protocol::Response::Ok);
        }
        conn.exit(0).unwrap();
        requests
    });
    let out = xe_in(
        &[
            "vm-export",
            "filename=out.bin",
            "-s",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ],
        Some(&dir),
    );
    let requests = h.join().unwrap();
    assert_eq!(requests[0], "GET /export?uuid=1 HTTP/1.0\r\n\r\n");
    assert_eq!(text(&out.stdout), "PAYLOAD");
    assert_eq!(std::fs::read(dir.join("out.bin")).unwrap(), b"PAYLOAD");
    assert_eq!(out.status.code(), Some(0));
}
