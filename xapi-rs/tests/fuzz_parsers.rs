//! Bounded fuzzing of the parsers a client reaches before (or right after)
//! logging in: XML-RPC and JSON-RPC bodies, where-expressions and `/cli`
//! requests, on the stable toolchain. A deterministic generator mutates
//! valid seeds with what hurts parsers (deep nesting, long chains, control
//! characters, huge numbers, cut-offs, repeats) and checks the properties
//! of `xapi_rs::fuzzing` (no panic, bounded results, our output well-formed).
//!
//! Bounded by `XAPI_FUZZ_SECS` (default 3 s per parser) and
//! `XAPI_FUZZ_ITERS`; `XAPI_FUZZ_SEED` reproduces a run. A failing input is
//! saved to `$TMPDIR/xapi-fuzz-crash-PARSER-SEED-ITER`.

use fuzz_loop::{Bounds, Rng};
use std::time::Duration;
use xapi_rs::fuzzing::{check_cli, check_expr, check_json, check_provision, check_xml};

const XML_SEEDS: &[&str] = &[
    "<?xml version='1.0'?>\n<methodCall><methodName>session.login_with_password</methodName><params><param><value><string>root</string></value></param><param><value>pw</value></param></params></methodCall>",
    "<methodCall><methodName>host.get_record</methodName><params><param><value>OpaqueRef:x</value></param><param><value><struct><member><name>k</name><value><array><data><value><i4>5</i4></value><value><boolean>1</boolean></value><value><double>1.5</double></value><value><dateTime.iso8601>20200407T08:28:32Z</dateTime.iso8601></value><value><nil/></value></data></array></value></member></struct></value></param></params></methodCall>",
    "<methodCall><methodName>a.b</methodName><params><param><value><base64>AAAA</base64></value></param><param><value><![CDATA[x<y]]></value></param><param><value>&lt;&amp;&#1;</value></param></params></methodCall>",
];

const JSON_SEEDS: &[&str] = &[
    r#"{"jsonrpc":"2.0","method":"session.login_with_password","params":["root","pw"],"id":1}"#,
    r#"{"method":"host.get_all_records","params":["OpaqueRef:x"],"id":"a"}"#,
    r#"{"jsonrpc":"2.0","method":"event.from","params":["s",["*"],"",60.1,{"a":[1,2.5,true,null,"\u0001"]}],"id":null}"#,
];

const EXPR_SEEDS: &[&str] = &[
    r#"field "name_label" = "x""#,
    r#"not (field "number" = "3" and "y" <> field "name_label") or true"#,
    r#"(((false))) and field "a\"b" = "c\\""#,
];

const PROVISION_SEEDS: &[&str] = &[
    r#"<provision><disk device="0" size="8589934592" sr="" bootable="true" type="system"/></provision>"#,
    r#"<?xml version="1.0"?><provision><disk device="autodetect" size="1024" sr="u" bootable="false" type="user"></disk><disk device="1" size="1" sr="" bootable="true"/></provision>"#,
];

const CLI_SEEDS: &[&str] = &[
    "POST /cli HTTP/1.1\r\ncontent-length: 30\r\n\r\nhost-cpu-list\nusername=root\npassword=x\n",
    "POST /cli HTTP/1.0\r\nContent-Length: 40\r\n\r\nsession_id=OpaqueRef:x\npool-param-set\nuuid=1\nname-label=a b\n",
    "host-list\nparams=uuid,name-label\n--minimal\n",
    "GET / HTTP/1.1\r\n\r\n",
];

/// Fragments that stress parsers, spliced in at random places.
const NASTY: &[&str] = &[
    "<value><array><data>",
    "<value><struct><member><name>a</name>",
    "</value>",
    "<![CDATA[",
    "&#0;",
    "&bogus;",
    "\u{0}\u{1}\u{1b}[0m",
    "\u{fffe}",
    "99999999999999999999999999",
    "-1e999",
    "[[[[[[[[[[",
    "{\"a\":{\"a\":{\"a\":",
    "\"\\ud800\"",
    " and ",
    " or not (",
    "field \"",
    "))))",
    "\r\n\r\n",
    "content-length: 999999999\r\n",
    "Content-Length: -1\r\n",
    "\n--minimal\nparams=",
    "=",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(8) {
            0 => {
                if !v.is_empty() {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
            }
            1 => v.truncate(at),
            2 => {
                let s = rng.pick(NASTY).as_bytes();
                v.splice(at..at, s.iter().copied());
            }
            3 => {
                // Deep or long: one fragment repeated many times.
                let s = rng.pick(NASTY).repeat(1 + rng.below(5000));
                v.splice(at..at, s.bytes());
            }
            4 => {
                // Repeat a slice of the input itself.
                let end = (at + 1 + rng.below(64)).min(v.len());
                let piece = v[at.min(end)..end].to_vec();
                for _ in 0..rng.below(200) {
                    v.splice(at..at, piece.iter().copied());
                }
            }
            5 => {
                let b = rng.next_u64() as u8;
                v.insert(at, b);
            }
            6 => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            _ => {
                // Wholesale: a long chain of where-expression terms.
                let n = 1 + rng.below(20_000);
                let chain = vec![r#"field "n" = "1""#; n].join(" and ");
                v.splice(at..at, chain.bytes());
            }
        }
    }
    v
}

/// Checks the seeds, then mutations of them for the configured time
/// (`XAPI_FUZZ_SECS`, `XAPI_FUZZ_ITERS`, `XAPI_FUZZ_SEED`).
fn fuzz(name: &str, seeds: &[&str], check: fn(&[u8])) {
    for s in seeds {
        check(s.as_bytes());
    }
    let bounds = Bounds::from_env("XAPI_FUZZ", 0x5eed_0000 + name.len() as u64);
    let stats = fuzz_loop::run(
        &format!("xapi-{name}"),
        bounds,
        |rng| {
            let base = *rng.pick(seeds);
            mutate(rng, base.as_bytes())
        },
        check,
    );
    // Bounded work: no input (up to a few hundred KB) takes long.
    assert!(
        stats.slowest < Duration::from_secs(2),
        "{name}: slowest input took {:?}",
        stats.slowest
    );
}

#[test]
fn fuzz_xmlrpc_bodies() {
    fuzz("xmlrpc", XML_SEEDS, check_xml);
}

#[test]
fn fuzz_jsonrpc_bodies() {
    fuzz("jsonrpc", JSON_SEEDS, check_json);
}

#[test]
fn fuzz_where_expressions() {
    fuzz("expr", EXPR_SEEDS, check_expr);
}

#[test]
fn fuzz_provision_disks() {
    fuzz("provision", PROVISION_SEEDS, check_provision);
}

#[test]
fn fuzz_cli_requests() {
    fuzz("cli", CLI_SEEDS, check_cli);
}

/// The inputs the issue named, as regression seeds: each is refused or
/// parsed, never a crash.
#[test]
fn known_nasty_inputs() {
    let chain = vec![r#"field "number" = "0""#; 60_000].join(" and ");
    check_expr(chain.as_bytes());
    let deep_xml = format!(
        "<methodCall><methodName>a</methodName><params><param>{}",
        "<value><array><data>".repeat(100_000)
    );
    check_xml(deep_xml.as_bytes());
    let deep_json = format!(r#"{{"method":"a","params":[{}]}}"#, "[".repeat(100_000));
    check_json(deep_json.as_bytes());
    let cli = format!(
        "POST /cli HTTP/1.1\r\ncontent-length: 100000\r\n\r\n{}",
        "x=".repeat(50_000)
    );
    check_cli(cli.as_bytes());
}
