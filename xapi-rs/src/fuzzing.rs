//! Properties checked on arbitrary input by the bounded fuzz tests
//! (`tests/fuzz_parsers.rs`) and the libFuzzer targets (`fuzz/`): every
//! parser an unauthenticated client reaches returns (no panic, no overflow)
//! with a result bounded by its input, and what we write back from what was
//! accepted is well-formed.

use crate::model::value::{to_xml, V};
use crate::rpc::wire::{json_response, parse_json_call, parse_xml_call, xml_response};

/// Depth of a value's nesting.
fn depth(v: &V) -> usize {
    match v {
        V::A(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        V::M(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}

/// Values in a value, itself included.
fn size(v: &V) -> usize {
    match v {
        V::A(a) => 1 + a.iter().map(size).sum::<usize>(),
        V::M(m) => 1 + m.values().map(size).sum::<usize>(),
        _ => 1,
    }
}

/// XML-RPC request bodies. An accepted call is bounded in depth and size,
/// and its parameters written back as XML-RPC parse again.
pub fn check_xml(data: &[u8]) {
    let Ok(call) = parse_xml_call(data) else {
        return;
    };
    let mut back = String::from("<methodCall><methodName>");
    crate::model::value::xml_escape(&call.method, &mut back);
    back.push_str("</methodName><params>");
    for p in &call.params {
        assert!(
            depth(p) <= crate::rpc::wire::MAX_DEPTH,
            "depth {}",
            depth(p)
        );
        assert!(
            size(p) <= data.len(),
            "{} values from {} bytes",
            size(p),
            data.len()
        );
        back.push_str("<param>");
        to_xml(p, &mut back);
        back.push_str("</param>");
    }
    back.push_str("</params></methodCall>");
    let again = parse_xml_call(back.as_bytes())
        .unwrap_or_else(|e| panic!("our own XML does not parse: {e}: {back:?}"));
    assert_eq!(again.params.len(), call.params.len());
    // A response carrying the same values is well-formed too.
    let resp = xml_response(&Ok(V::A(call.params)));
    assert!(resp.starts_with("<methodResponse>") && resp.ends_with("</methodResponse>"));
}

/// JSON-RPC request bodies. An accepted call is bounded, and the response
/// echoing its parameters and id is valid JSON.
pub fn check_json(data: &[u8]) {
    let Ok(jc) = parse_json_call(data) else {
        return;
    };
    for p in &jc.call.params {
        assert!(size(p) <= data.len());
        // serde_json's own recursion limit.
        assert!(depth(p) <= 129, "depth {}", depth(p));
    }
    for v2 in [true, false] {
        let out = json_response(&Ok(V::A(jc.call.params.clone())), v2, &jc.id);
        serde_json::from_str::<serde_json::Value>(&out).expect("our JSON parses");
        let out = json_response(&Err(vec![jc.call.method.clone()]), v2, &jc.id);
        serde_json::from_str::<serde_json::Value>(&out).expect("our JSON parses");
    }
}

/// Where-expressions: bounded before parsing, evaluated without recursion
/// trouble.
pub fn check_expr(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(e) = crate::db::expr::parse(&s) {
        assert!(s.len() <= crate::db::expr::MAX_LEN);
        let mut r = crate::model::value::Record::new();
        r.insert("name_label".into(), V::str("x"));
        r.insert("number".into(), V::I(3));
        let _ = e.eval(&r);
    }
}

/// A template's `other_config:disks` (`VM.provision`, from any client):
/// an accepted document names no more disks than its bytes can hold.
pub fn check_provision(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(disks) = crate::api::vm::provision::parse_disks(&s) {
        assert!(disks.len() <= s.len() / 8, "{} disks", disks.len());
    }
}

/// `/cli` requests: the request head as `cli::sniff` reads it off a
/// connection, then the body as the server splits it into a command line.
pub fn check_cli(data: &[u8]) {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
    }
    let sniffed = RT.with(|rt| {
        rt.block_on(async {
            let mut input = data;
            crate::cli::sniff(&mut input).await
        })
    });
    match sniffed {
        Ok(crate::cli::Sniffed::Cli(body)) => {
            assert!(body.len() <= xe::protocol::MAX_BODY);
            check_cli_body(&body);
        }
        Ok(crate::cli::Sniffed::Other(buf)) => assert!(buf.len() <= data.len()),
        Err(_) => {}
    }
    check_cli_body(data);
}

fn check_cli_body(body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    let (_, lines) = xe::args::parse_body(&text);
    assert!(lines.len() <= body.len() + 1);
    if let Ok(cl) = xe::args::parse_commandline(&lines) {
        assert!(cl.params.len() <= lines.len());
    }
}
