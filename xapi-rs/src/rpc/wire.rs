//! XML-RPC and JSON-RPC envelopes (see shared/docs/xenapi-wire.md).

use crate::model::value::{from_json, to_xml, xml_escape, Json, V};
use quick_xml::events::Event;
use quick_xml::Reader;
use std::collections::BTreeMap;

/// Maximum nesting depth accepted in a request.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("malformed JSON: {0}")]
    Json(String),
}

/// A decoded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub params: Vec<V>,
}

/// The outcome of a call: a value, or an error description `[CODE, params...]`.
pub type Outcome = Result<V, Vec<String>>;

// ---------------------------------------------------------------------------
// XML-RPC

#[derive(Debug, Default)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

fn parse_dom(body: &str) -> Result<Node, WireError> {
    let mut reader = Reader::from_str(body);
    let mut stack: Vec<Node> = vec![Node::default()];
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| WireError::Xml(e.to_string()))?;
        match ev {
            Event::Start(e) => {
                if stack.len() > MAX_DEPTH {
                    return Err(WireError::Xml("nesting too deep".into()));
                }
                stack.push(Node {
                    name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    ..Default::default()
                });
            }
            Event::Empty(e) => {
                let n = Node {
                    name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    ..Default::default()
                };
                if let Some(top) = stack.last_mut() {
                    top.children.push(n);
                }
            }
            Event::End(_) => {
                if stack.len() < 2 {
                    return Err(WireError::Xml("unbalanced end tag".into()));
                }
                let n = stack.pop().ok_or_else(|| WireError::Xml("stack".into()))?;
                if let Some(top) = stack.last_mut() {
                    top.children.push(n);
                }
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| WireError::Xml(e.to_string()))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err(WireError::Xml("unclosed element".into()));
    }
    let mut root = stack.pop().unwrap_or_default();
    if root.children.len() != 1 {
        return Err(WireError::Xml("expected one root element".into()));
    }
    Ok(root.children.remove(0))
}

fn xml_value(n: &Node) -> Result<V, WireError> {
    let bad = |m: &str| WireError::Xml(m.to_string());
    if n.name != "value" {
        return Err(bad("expected <value>"));
    }
    let Some(c) = n.children.first() else {
        return Ok(V::S(n.text.clone()));
    };
    Ok(match c.name.as_str() {
        "string" => V::S(c.text.clone()),
        "int" | "i4" | "i8" => V::I(c.text.trim().parse().map_err(|_| bad("bad int"))?),
        "boolean" => V::B(matches!(c.text.trim(), "1" | "true")),
        "double" => V::F(c.text.trim().parse().map_err(|_| bad("bad double"))?),
        "dateTime.iso8601" => V::D(c.text.trim().to_string()),
        "base64" => V::S(c.text.clone()),
        "nil" => V::S(String::new()),
        "array" => {
            let data = c
                .children
                .iter()
                .find(|d| d.name == "data")
                .ok_or_else(|| bad("array without data"))?;
            V::A(
                data.children
                    .iter()
                    .map(xml_value)
                    .collect::<Result<_, _>>()?,
            )
        }
        "struct" => {
            let mut m = BTreeMap::new();
            for mem in &c.children {
                if mem.name != "member" {
                    return Err(bad("expected <member>"));
                }
                let name = mem
                    .children
                    .iter()
                    .find(|x| x.name == "name")
                    .ok_or_else(|| bad("member without name"))?;
                let val = mem
                    .children
                    .iter()
                    .find(|x| x.name == "value")
                    .ok_or_else(|| bad("member without value"))?;
                m.insert(name.text.clone(), xml_value(val)?);
            }
            V::M(m)
        }
        other => return Err(WireError::Xml(format!("unknown value type {other}"))),
    })
}

pub fn parse_xml_call(body: &[u8]) -> Result<Call, WireError> {
    let s = std::str::from_utf8(body).map_err(|_| WireError::Xml("not UTF-8".into()))?;
    let root = parse_dom(s)?;
    if root.name != "methodCall" {
        return Err(WireError::Xml("expected <methodCall>".into()));
    }
    let method = root
        .children
        .iter()
        .find(|c| c.name == "methodName")
        .ok_or_else(|| WireError::Xml("no methodName".into()))?
        .text
        .trim()
        .to_string();
    let mut params = vec![];
    if let Some(ps) = root.children.iter().find(|c| c.name == "params") {
        for p in &ps.children {
            let v = p
                .children
                .iter()
                .find(|c| c.name == "value")
                .ok_or_else(|| WireError::Xml("param without value".into()))?;
            params.push(xml_value(v)?);
        }
    }
    Ok(Call { method, params })
}

/// The XML-RPC response document for an outcome.
pub fn xml_response(outcome: &Outcome) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<methodResponse><params><param><value><struct>");
    match outcome {
        Ok(v) => {
            out.push_str("<member><name>Status</name><value>Success</value></member>");
            out.push_str("<member><name>Value</name>");
            to_xml(v, &mut out);
            out.push_str("</member>");
        }
        Err(desc) => {
            out.push_str("<member><name>Status</name><value>Failure</value></member>");
            out.push_str("<member><name>ErrorDescription</name><value><array><data>");
            for d in desc {
                out.push_str("<value>");
                xml_escape(d, &mut out);
                out.push_str("</value>");
            }
            out.push_str("</data></array></value></member>");
        }
    }
    out.push_str("</struct></value></param></params></methodResponse>");
    out
}

// ---------------------------------------------------------------------------
// JSON-RPC

#[derive(Debug, Clone)]
pub struct JsonCall {
    pub call: Call,
    pub v2: bool,
    pub id: serde_json::Value,
}

pub fn parse_json_call(body: &[u8]) -> Result<JsonCall, WireError> {
    let j: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
    let obj = j
        .as_object()
        .ok_or_else(|| WireError::Json("request is not an object".into()))?;
    let v2 = obj.get("jsonrpc").and_then(|v| v.as_str()) == Some("2.0");
    let id = obj.get("id").cloned().unwrap_or(serde_json::Value::Null);
    let method = obj
        .get("method")
        .and_then(|m| m.as_str())
        .ok_or_else(|| WireError::Json("no method".into()))?
        .to_string();
    let params = match obj.get("params") {
        None | Some(serde_json::Value::Null) => vec![],
        Some(serde_json::Value::Array(a)) => a.iter().cloned().map(from_json).collect(),
        Some(_) => return Err(WireError::Json("params must be an array".into())),
    };
    Ok(JsonCall {
        call: Call { method, params },
        v2,
        id,
    })
}

pub fn json_response(outcome: &Outcome, v2: bool, id: &serde_json::Value) -> String {
    use serde_json::{json, Value as J};
    // Results are written straight from the value (no intermediate tree).
    #[derive(serde::Serialize)]
    struct Ok2<'a> {
        jsonrpc: &'static str,
        result: Json<'a>,
        id: &'a J,
    }
    #[derive(serde::Serialize)]
    struct Ok1<'a> {
        result: Json<'a>,
        error: (),
        id: &'a J,
    }
    let body = match (outcome, v2) {
        (Ok(v), true) => serde_json::to_string(&Ok2 {
            jsonrpc: "2.0",
            result: Json(v),
            id,
        }),
        (Ok(v), false) => serde_json::to_string(&Ok1 {
            result: Json(v),
            error: (),
            id,
        }),
        (Err(d), true) => {
            let data: Vec<J> = d.iter().skip(1).map(|s| J::String(s.clone())).collect();
            Ok(json!({"jsonrpc": "2.0", "error": {"code": 1, "message": d.first().cloned().unwrap_or_default(), "data": data}, "id": id}).to_string())
        }
        (Err(d), false) => Ok(json!({"result": J::Null, "error": d, "id": id}).to_string()),
    };
    // Serializing our own values cannot fail (string keys, finite numbers).
    body.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_xml() {
        let c = parse_xml_call(
            b"<?xml version='1.0'?>\n<methodCall>\n<methodName>session.login_with_password</methodName>\n<params>\n<param>\n<value><string>root</string></value>\n</param>\n<param><value>pw</value></param><param><value><i4>5</i4></value></param><param><value><struct><member><name>k</name><value><array><data><value>x</value></data></array></value></member></struct></value></param>\n</params>\n</methodCall>\n",
        )
        .unwrap();
        assert_eq!(c.method, "session.login_with_password");
        assert_eq!(c.params[0], V::str("root"));
        assert_eq!(c.params[1], V::str("pw"));
        assert_eq!(c.params[2], V::I(5));
        assert!(matches!(c.params[3], V::M(_)));
    }

    #[test]
    fn malformed_xml() {
        assert!(parse_xml_call(b"<methodCall><methodName>x</methodName>").is_err());
        assert!(parse_xml_call(b"garbage").is_err());
        assert!(parse_xml_call(&[0xff, 0xfe]).is_err());
        let deep = "<methodCall><params><param>".to_string() + &"<value><array><data>".repeat(1000);
        assert!(parse_xml_call(deep.as_bytes()).is_err());
    }

    #[test]
    fn responses() {
        assert_eq!(
            xml_response(&Err(vec!["SESSION_INVALID".into(), "OpaqueRef:x".into()])),
            "<methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data><value>SESSION_INVALID</value><value>OpaqueRef:x</value></data></array></value></member></struct></value></param></params></methodResponse>"
        );
        let r = json_response(&Ok(V::I(3)), true, &serde_json::json!(7));
        assert_eq!(r, r#"{"jsonrpc":"2.0","result":3,"id":7}"#);
        let r = json_response(
            &Err(vec!["E".into(), "a".into()]),
            false,
            &serde_json::json!("x"),
        );
        assert_eq!(r, r#"{"result":null,"error":["E","a"],"id":"x"}"#);
    }
}
