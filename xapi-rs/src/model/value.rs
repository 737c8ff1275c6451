//! Wire-neutral values, typed by the datamodel, and their XML-RPC / JSON forms.

use crate::model::{enum_def, Def, Field, Ty};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub const NULL_REF: &str = "OpaqueRef:NULL";

/// A XenAPI value. Datetimes keep their compact wire form
/// (`20200407T08:28:32Z`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum V {
    S(String),
    I(i64),
    /// A 32-bit int: `<i4>` on XML-RPC (used by `valid_ref_counts`).
    I32(i32),
    F(f64),
    B(bool),
    D(String),
    A(Vec<V>),
    M(BTreeMap<String, V>),
}

pub type Record = BTreeMap<String, V>;

impl Default for V {
    /// The wire's "nothing": an empty string (what `void` returns).
    fn default() -> Self {
        V::S(String::new())
    }
}

impl V {
    pub fn str(s: impl Into<String>) -> V {
        V::S(s.into())
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            V::S(s) | V::D(s) => Some(s),
            _ => None,
        }
    }
    /// Stringified form, used for map keys and `get_all_records_where`.
    pub fn to_plain(&self) -> String {
        match self {
            V::S(s) | V::D(s) => s.clone(),
            V::I(i) => i.to_string(),
            V::I32(i) => i.to_string(),
            V::F(f) => fmt_float(*f),
            V::B(b) => b.to_string(),
            V::A(a) => a.iter().map(V::to_plain).collect::<Vec<_>>().join("; "),
            V::M(m) => m
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_plain()))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

pub fn fmt_float(f: f64) -> String {
    if f.is_finite() {
        format!("{f}")
    } else {
        "0".to_string()
    }
}

/// Seconds since the epoch to the compact XenAPI datetime `YYYYMMDDTHH:MM:SSZ`.
pub fn datetime_from_unix(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // civil-from-days (Howard Hinnant)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mth = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mth <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{mth:02}{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn now_datetime() -> V {
    V::D(datetime_from_unix(now_unix()))
}

/// The default value of a type.
pub fn zero(ty: &Ty) -> V {
    match ty {
        Ty::String => V::S(String::new()),
        Ty::Int => V::I(0),
        Ty::Float => V::F(0.0),
        Ty::Bool => V::B(false),
        Ty::DateTime => V::D(datetime_from_unix(0)),
        Ty::Ref(_) => V::S(NULL_REF.into()),
        Ty::Enum(e) => V::S(
            enum_def(e)
                .and_then(|d| d.values.first())
                .unwrap_or(&"")
                .to_string(),
        ),
        Ty::Set(_) => V::A(vec![]),
        Ty::Map(..) => V::M(BTreeMap::new()),
        Ty::Record(c) => V::M(
            crate::model::class(c)
                .map(|c| {
                    c.fields
                        .iter()
                        .map(|f| (f.name.to_string(), default_of(f)))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Ty::Option(_) | Ty::Any => V::S(String::new()),
    }
}

pub fn default_of(field: &Field) -> V {
    match field.default {
        Def::Auto => zero(&field.ty),
        Def::Str(s) => V::S(s.into()),
        Def::Int(i) => V::I(i),
        Def::Float(f) => V::F(f),
        Def::Bool(b) => V::B(b),
        Def::Set(items) => {
            let et = match field.ty {
                Ty::Set(t) => *t,
                _ => Ty::String,
            };
            V::A(
                items
                    .iter()
                    .filter_map(|i| coerce(V::str(*i), &et))
                    .collect(),
            )
        }
        Def::Map(pairs) => {
            let vt = match field.ty {
                Ty::Map(_, t) => *t,
                _ => Ty::String,
            };
            V::M(
                pairs
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), coerce(V::str(*v), &vt)?)))
                    .collect(),
            )
        }
    }
}

/// Coerce an incoming wire value to a datamodel type. `None` if impossible.
pub fn coerce(v: V, ty: &Ty) -> Option<V> {
    match (ty, v) {
        (Ty::String | Ty::Ref(_), V::S(s)) => Some(V::S(s)),
        (Ty::String, V::I(i)) => Some(V::S(i.to_string())),
        (Ty::Enum(e), V::S(s)) => {
            let d = enum_def(e)?;
            d.values
                .iter()
                .find(|x| x.eq_ignore_ascii_case(&s))
                .map(|x| V::S(x.to_string()))
        }
        (Ty::Int, V::I(i)) => Some(V::I(i)),
        (Ty::Int, V::I32(i)) => Some(V::I(i.into())),
        (Ty::Int, V::S(s)) => s.trim().parse().ok().map(V::I),
        (Ty::Float, V::F(f)) => Some(V::F(f)),
        (Ty::Float, V::I(i)) => Some(V::F(i as f64)),
        (Ty::Float, V::S(s)) => s.trim().parse().ok().map(V::F),
        (Ty::Bool, V::B(b)) => Some(V::B(b)),
        (Ty::Bool, V::S(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(V::B(true)),
            "false" | "0" => Some(V::B(false)),
            _ => None,
        },
        (Ty::DateTime, V::D(s) | V::S(s)) => Some(V::D(s)),
        (Ty::Set(t), V::A(a)) => a
            .into_iter()
            .map(|x| coerce(x, t))
            .collect::<Option<Vec<_>>>()
            .map(V::A),
        (Ty::Map(_, vt), V::M(m)) => m
            .into_iter()
            .map(|(k, x)| coerce(x, vt).map(|x| (k, x)))
            .collect::<Option<BTreeMap<_, _>>>()
            .map(V::M),
        (Ty::Record(c), V::M(m)) => {
            let c = crate::model::class(c)?;
            let mut out = Record::new();
            for f in c.fields {
                let v = match m.get(f.name) {
                    Some(v) => coerce(v.clone(), &f.ty)?,
                    None => default_of(f),
                };
                out.insert(f.name.to_string(), v);
            }
            Some(V::M(out))
        }
        (Ty::Option(t), v) => coerce(v, t),
        (Ty::Any, v) => Some(v),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// XML-RPC encoding (compact: no whitespace between tags).

/// Escapes text for XML. Characters XML 1.0 cannot carry at all (C0
/// controls other than tab, LF and CR; U+FFFE, U+FFFF) are dropped, as the
/// reference drops them: a client's parser would reject the whole response.
pub fn xml_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < '\u{20}' || c == '\u{fffe}' || c == '\u{ffff}' => {}
            _ => out.push(c),
        }
    }
}

pub fn to_xml(v: &V, out: &mut String) {
    out.push_str("<value>");
    match v {
        V::S(s) => xml_escape(s, out),
        V::I(i) => {
            let _ = write!(out, "{i}");
        }
        V::I32(i) => {
            let _ = write!(out, "<i4>{i}</i4>");
        }
        V::F(f) => {
            let _ = write!(out, "<double>{}</double>", fmt_float(*f));
        }
        V::B(b) => {
            let _ = write!(out, "<boolean>{}</boolean>", if *b { 1 } else { 0 });
        }
        V::D(d) => {
            out.push_str("<dateTime.iso8601>");
            xml_escape(d, out);
            out.push_str("</dateTime.iso8601>");
        }
        V::A(a) => {
            out.push_str("<array><data>");
            for x in a {
                to_xml(x, out);
            }
            out.push_str("</data></array>");
        }
        V::M(m) => {
            out.push_str("<struct>");
            for (k, x) in m {
                out.push_str("<member><name>");
                xml_escape(k, out);
                out.push_str("</name>");
                to_xml(x, out);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>");
}

pub fn to_xml_string(v: &V) -> String {
    let mut s = String::new();
    to_xml(v, &mut s);
    s
}

// ---------------------------------------------------------------------------
// JSON encoding.

/// A value in its JSON-RPC form, serialized straight to the output:
/// building a `serde_json::Value` tree first (an ordered map per record)
/// cost most of a 1,000-VM `get_all_records`.
pub struct Json<'a>(pub &'a V);

impl Serialize for Json<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            V::S(x) | V::D(x) => s.serialize_str(x),
            V::I(i) => s.serialize_i64(*i),
            V::I32(i) => s.serialize_i32(*i),
            V::F(f) if f.is_finite() => s.serialize_f64(*f),
            V::F(_) => s.serialize_i64(0),
            V::B(b) => s.serialize_bool(*b),
            V::A(a) => {
                let mut q = s.serialize_seq(Some(a.len()))?;
                for x in a {
                    q.serialize_element(&Json(x))?;
                }
                q.end()
            }
            V::M(m) => {
                let mut q = s.serialize_map(Some(m.len()))?;
                for (k, x) in m {
                    q.serialize_entry(k, &Json(x))?;
                }
                q.end()
            }
        }
    }
}

pub fn from_json(j: serde_json::Value) -> V {
    use serde_json::Value as J;
    match j {
        J::Null => V::S(String::new()),
        J::Bool(b) => V::B(b),
        J::Number(n) => n
            .as_i64()
            .map(V::I)
            .unwrap_or_else(|| V::F(n.as_f64().unwrap_or(0.0))),
        J::String(s) => V::S(s),
        J::Array(a) => V::A(a.into_iter().map(from_json).collect()),
        J::Object(o) => V::M(o.into_iter().map(|(k, x)| (k, from_json(x))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_format() {
        assert_eq!(datetime_from_unix(0), "19700101T00:00:00Z");
        assert_eq!(datetime_from_unix(1586248112), "20200407T08:28:32Z");
    }

    #[test]
    fn xml_compact() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), V::I(5));
        m.insert("b".to_string(), V::A(vec![V::str("x<y"), V::B(true)]));
        assert_eq!(
            to_xml_string(&V::M(m)),
            "<value><struct><member><name>a</name><value>5</value></member><member><name>b</name><value><array><data><value>x&lt;y</value><value><boolean>1</boolean></value></data></array></value></member></struct></value>"
        );
    }

    #[test]
    fn control_characters_are_dropped_from_xml() {
        let mut out = String::new();
        xml_escape("a\u{0}b\u{1b}[1mc\td\ne\rf\u{fffe}g\u{7f}", &mut out);
        assert_eq!(out, "ab[1mc\td\ne\rfg\u{7f}");
    }

    #[test]
    fn coercions() {
        assert_eq!(coerce(V::str("42"), &Ty::Int), Some(V::I(42)));
        assert_eq!(coerce(V::I(1), &Ty::Float), Some(V::F(1.0)));
        assert_eq!(
            coerce(V::str("Pending"), &Ty::Enum("task_status_type")),
            Some(V::str("pending"))
        );
        assert_eq!(coerce(V::str("x"), &Ty::Int), None);
    }
}
