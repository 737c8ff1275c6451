//! What the generated records are made of: typed references, datetimes,
//! and the conversions between Rust values and wire [`V`]alues.

use crate::model::value::{default_of, Record, NULL_REF, V};
use crate::model::Field;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// A record type of a class (generated, one per class).
pub trait Object: Sized {
    /// The class's wire name.
    const CLASS: &'static str;
    /// Every field, by its wire name.
    fn to_record(&self) -> Record;
    /// From a stored record; missing or ill-typed fields take their default.
    fn from_record(r: &Record) -> Self;
}

/// A value with a wire form.
pub trait Wire: Sized {
    fn to_v(&self) -> V;
    fn from_v(v: &V) -> Option<Self>;
}

/// A value usable as a map key on the wire (keys are strings there).
pub trait WireKey: Sized + Ord {
    fn to_key(&self) -> String;
    fn from_key(s: &str) -> Option<Self>;
}

/// Reads field `f` of a stored record, falling back to its default.
pub fn field<T: Wire + Default>(r: &Record, f: &Field) -> T {
    r.get(f.name)
        .and_then(T::from_v)
        .or_else(|| T::from_v(&default_of(f)))
        .unwrap_or_default()
}

/// A reference to an object of class `C` (`OpaqueRef:...`).
pub struct Ref<C> {
    r: String,
    class: PhantomData<fn() -> C>,
}

impl<C> Ref<C> {
    pub fn new(r: impl Into<String>) -> Self {
        Ref {
            r: r.into(),
            class: PhantomData,
        }
    }
    pub fn null() -> Self {
        Ref::new(NULL_REF)
    }
    pub fn as_str(&self) -> &str {
        &self.r
    }
    pub fn is_null(&self) -> bool {
        self.r == NULL_REF
    }
}

impl<C: Object> Ref<C> {
    pub fn class(&self) -> &'static str {
        C::CLASS
    }
}

impl<C> Clone for Ref<C> {
    fn clone(&self) -> Self {
        Ref::new(self.r.clone())
    }
}
impl<C> std::fmt::Debug for Ref<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.r.fmt(f)
    }
}
impl<C> std::fmt::Display for Ref<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.r.fmt(f)
    }
}
impl<C> PartialEq for Ref<C> {
    fn eq(&self, o: &Self) -> bool {
        self.r == o.r
    }
}
impl<C> Eq for Ref<C> {}
impl<C> PartialOrd for Ref<C> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<C> Ord for Ref<C> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.r.cmp(&o.r)
    }
}
impl<C> std::hash::Hash for Ref<C> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.r.hash(h)
    }
}
impl<C> Default for Ref<C> {
    fn default() -> Self {
        Ref::null()
    }
}
impl<C> Serialize for Ref<C> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.r.serialize(s)
    }
}
impl<'de, C> Deserialize<'de> for Ref<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Ref::new)
    }
}
impl<C> Wire for Ref<C> {
    fn to_v(&self) -> V {
        V::S(self.r.clone())
    }
    fn from_v(v: &V) -> Option<Self> {
        match v {
            V::S(s) => Some(Ref::new(s.clone())),
            _ => None,
        }
    }
}
impl<C> WireKey for Ref<C> {
    fn to_key(&self) -> String {
        self.r.clone()
    }
    fn from_key(s: &str) -> Option<Self> {
        Some(Ref::new(s))
    }
}

/// A datetime in the compact wire form `20200407T08:28:32Z`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DateTime(pub String);

impl Default for DateTime {
    fn default() -> Self {
        DateTime(crate::model::value::datetime_from_unix(0))
    }
}

impl DateTime {
    pub fn now() -> Self {
        DateTime(crate::model::value::datetime_from_unix(
            crate::model::value::now_unix(),
        ))
    }
}

impl Wire for DateTime {
    fn to_v(&self) -> V {
        V::D(self.0.clone())
    }
    fn from_v(v: &V) -> Option<Self> {
        match v {
            V::D(s) | V::S(s) => Some(DateTime(s.clone())),
            _ => None,
        }
    }
}

impl Wire for String {
    fn to_v(&self) -> V {
        V::S(self.clone())
    }
    fn from_v(v: &V) -> Option<Self> {
        match v {
            V::S(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl WireKey for String {
    fn to_key(&self) -> String {
        self.clone()
    }
    fn from_key(s: &str) -> Option<Self> {
        Some(s.to_string())
    }
}

impl Wire for i64 {
    fn to_v(&self) -> V {
        V::I(*self)
    }
    fn from_v(v: &V) -> Option<Self> {
        match v {
            V::I(i) => Some(*i),
            V::I32(i) => Some((*i).into()),
            _ => None,
        }
    }
}
impl WireKey for i64 {
    fn to_key(&self) -> String {
        self.to_string()
    }
    fn from_key(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

impl Wire for f64 {
    fn to_v(&self) -> V {
        V::F(*self)
    }
    fn from_v(v: &V) -> Option<Self> {
        match v {
            V::F(f) => Some(*f),
            V::I(i) => Some(*i as f64),
            _ => None,
        }
    }
}

/// A void result: the empty string on the wire, as the reference sends.
impl Wire for () {
    fn to_v(&self) -> V {
        V::S(String::new())
    }
    fn from_v(_: &V) -> Option<Self> {
        Some(())
    }
}

impl Wire for bool {
    fn to_v(&self) -> V {
        V::B(*self)
    }
    fn from_v(v: &V) -> Option<Self> {
        match v {
            V::B(b) => Some(*b),
            _ => None,
        }
    }
}

impl Wire for V {
    fn to_v(&self) -> V {
        self.clone()
    }
    fn from_v(v: &V) -> Option<Self> {
        Some(v.clone())
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn to_v(&self) -> V {
        V::A(self.iter().map(Wire::to_v).collect())
    }
    fn from_v(v: &V) -> Option<Self> {
        match v {
            V::A(a) => a.iter().map(T::from_v).collect(),
            _ => None,
        }
    }
}

impl<T: Wire> Wire for Option<T> {
    fn to_v(&self) -> V {
        match self {
            Some(x) => x.to_v(),
            None => V::S(String::new()),
        }
    }
    fn from_v(v: &V) -> Option<Self> {
        Some(T::from_v(v))
    }
}

impl<K: WireKey, T: Wire> Wire for BTreeMap<K, T> {
    fn to_v(&self) -> V {
        V::M(self.iter().map(|(k, x)| (k.to_key(), x.to_v())).collect())
    }
    fn from_v(v: &V) -> Option<Self> {
        match v {
            V::M(m) => m
                .iter()
                .map(|(k, x)| Some((K::from_key(k)?, T::from_v(x)?)))
                .collect(),
            _ => None,
        }
    }
}

impl<T: Object> Wire for Box<T> {
    fn to_v(&self) -> V {
        V::M(self.to_record())
    }
    fn from_v(v: &V) -> Option<Self> {
        match v {
            V::M(m) => Some(Box::new(T::from_record(m))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::records::{Host, HostCpu, HostDisplay, Task, TaskStatusType};

    #[test]
    fn records_round_trip_with_defaults() {
        let h = Host::default();
        assert_eq!(h.display, HostDisplay::Enabled);
        assert!(h.suspend_image_sr.is_null());
        let mut cpu = HostCpu {
            number: 3,
            utilisation: 0.5,
            ..HostCpu::default()
        };
        cpu.host = Ref::new("OpaqueRef:h");
        let rec = cpu.to_record();
        assert_eq!(rec["number"], V::I(3));
        assert_eq!(rec["host"], V::str("OpaqueRef:h"));
        assert_eq!(HostCpu::from_record(&rec), cpu);
        let fields: Vec<&str> = crate::model::class("host_cpu")
            .unwrap()
            .fields
            .iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(
            rec.keys().map(String::as_str).collect::<Vec<_>>().len(),
            fields.len()
        );
        let t = Task {
            status: TaskStatusType::Cancelling,
            type_: "x".into(),
            ..Task::default()
        };
        assert_eq!(t.to_record()["status"], V::str("cancelling"));
        assert_eq!(t.to_record()["type"], V::str("x"));
        // serde uses the wire names too.
        let j = serde_json::to_value(&t).unwrap();
        assert_eq!(j["type"], "x");
        assert_eq!(j["status"], "cancelling");
    }
}
