//! The object database.
//!
//! Storage engine: [`redb`], an embedded, pure-Rust, copy-on-write B-tree
//! store. Chosen over sqlite because (a) every `commit()` with the default
//! `Durability::Immediate` is fsync'd before it returns, so an acknowledged
//! write survives `kill -9` and power loss, (b) it builds quickly with no C
//! toolchain, and (c) our access pattern — whole-table reads served from an
//! in-memory cache, small write-through updates keyed by reference — needs no
//! SQL. The schema is generated from the API definition (the tables of
//! [`crate::generated::schema`]): one table per persistent class (`obj_<class>`, key = reference, value = JSON of the record plus its
//! creation/modification generations) and a `meta` table holding the global
//! generation counter. On load, records are normalised against the datamodel
//! (missing fields get their defaults, unknown fields are dropped), which is
//! the schema-upgrade path.
//!
//! Every write bumps a global generation counter; each object remembers the
//! generation at which it was created and last modified, and deletions are
//! kept in a bounded log, which is what `event.from`/`event.next` read.

use crate::datamodel::{class, Class, CLASSES};
use crate::typed::{Object, Ref};
use crate::value::{default_of, Record, V};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const MAX_DELETED: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Storage(String),
    #[error("no such object {class} {reference}")]
    NotFound { class: String, reference: String },
    #[error("unknown class {0}")]
    UnknownClass(String),
}

fn st<E: Into<redb::Error>>(e: E) -> DbError {
    DbError::Storage(e.into().to_string())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Obj {
    pub rec: Record,
    pub created: u64,
    pub modified: u64,
}

#[derive(Debug, Clone)]
pub struct Deleted {
    pub gen: u64,
    pub class: &'static str,
    pub reference: String,
    pub uuid: String,
}

/// One change, as reported by the event messages.
#[derive(Debug, Clone)]
pub struct Change {
    pub gen: u64,
    pub class: &'static str,
    pub reference: String,
    /// "add", "mod" or "del".
    pub operation: &'static str,
    pub snapshot: Option<Record>,
}

struct Inner {
    gen: u64,
    tables: HashMap<&'static str, BTreeMap<String, Obj>>,
    deleted: VecDeque<Deleted>,
}

pub struct Db {
    redb: redb::Database,
    inner: Mutex<Inner>,
    notify: watch::Sender<u64>,
}

fn table_def(c: &'static Class) -> TableDefinition<'static, &'static str, &'static [u8]> {
    // Table names come from the datamodel; leak-free because class names are 'static.
    TableDefinition::new(
        TABLE_NAMES
            .iter()
            .find(|(n, _)| *n == c.name)
            .map_or(c.name, |(_, t)| t),
    )
}

/// Table name per persistent class, generated from the datamodel.
static TABLE_NAMES: std::sync::LazyLock<Vec<(&'static str, &'static str)>> =
    std::sync::LazyLock::new(|| {
        CLASSES
            .iter()
            .filter(|c| c.in_db && c.persistent)
            .map(|c| {
                let t: &'static str = Box::leak(format!("obj_{}", c.name).into_boxed_str());
                (c.name, t)
            })
            .collect()
    });

/// Fill missing fields with defaults and drop fields not in the datamodel.
pub fn normalise(c: &'static Class, rec: &mut Record) {
    rec.retain(|k, _| c.field(k).is_some());
    for f in c.fields {
        rec.entry(f.name.to_string())
            .or_insert_with(|| default_of(f));
    }
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let redb = redb::Database::create(path).map_err(st)?;
        let tx = redb.begin_write().map_err(st)?;
        let mut tables = HashMap::new();
        let mut gen = 0;
        {
            let meta = tx.open_table(META).map_err(st)?;
            if let Some(g) = meta.get("generation").map_err(st)? {
                gen = g.value();
            }
            for c in CLASSES {
                let mut objs = BTreeMap::new();
                if c.in_db && c.persistent {
                    let t = tx.open_table(table_def(c)).map_err(st)?;
                    for item in t.iter().map_err(st)? {
                        let (k, v) = item.map_err(st)?;
                        match serde_json::from_slice::<Obj>(v.value()) {
                            Ok(mut o) => {
                                normalise(c, &mut o.rec);
                                gen = gen.max(o.modified);
                                objs.insert(k.value().to_string(), o);
                            }
                            Err(e) => {
                                tracing::warn!("dropping undecodable {} {}: {e}", c.name, k.value())
                            }
                        }
                    }
                }
                tables.insert(c.name, objs);
            }
        }
        tx.commit().map_err(st)?;
        let (notify, _) = watch::channel(gen);
        Ok(Db {
            redb,
            inner: Mutex::new(Inner {
                gen,
                tables,
                deleted: VecDeque::new(),
            }),
            notify,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write one object (or its removal) durably, with the new generation.
    fn persist(
        &self,
        c: &'static Class,
        reference: &str,
        obj: Option<&Obj>,
        gen: u64,
    ) -> Result<(), DbError> {
        if !(c.in_db && c.persistent) {
            return Ok(());
        }
        let tx = self.redb.begin_write().map_err(st)?;
        {
            let mut t = tx.open_table(table_def(c)).map_err(st)?;
            match obj {
                Some(o) => {
                    let bytes =
                        serde_json::to_vec(o).map_err(|e| DbError::Storage(e.to_string()))?;
                    t.insert(reference, bytes.as_slice()).map_err(st)?;
                }
                None => {
                    t.remove(reference).map_err(st)?;
                }
            }
            let mut meta = tx.open_table(META).map_err(st)?;
            meta.insert("generation", gen).map_err(st)?;
        }
        tx.commit().map_err(st)
    }

    fn cls(name: &str) -> Result<&'static Class, DbError> {
        class(name).ok_or_else(|| DbError::UnknownClass(name.to_string()))
    }

    pub fn generation(&self) -> u64 {
        self.lock().gen
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn create(&self, cname: &str, reference: &str, mut rec: Record) -> Result<u64, DbError> {
        let c = Self::cls(cname)?;
        normalise(c, &mut rec);
        let mut g = self.lock();
        let gen = g.gen + 1;
        let obj = Obj {
            rec,
            created: gen,
            modified: gen,
        };
        self.persist(c, reference, Some(&obj), gen)?;
        g.gen = gen;
        g.tables
            .entry(c.name)
            .or_default()
            .insert(reference.to_string(), obj);
        drop(g);
        self.notify.send_replace(gen);
        Ok(gen)
    }

    /// Apply `f` to a record; bumps its generation. Returns f's result.
    pub fn update<T>(
        &self,
        cname: &str,
        reference: &str,
        f: impl FnOnce(&mut Record) -> T,
    ) -> Result<T, DbError> {
        let c = Self::cls(cname)?;
        let mut g = self.lock();
        let gen = g.gen + 1;
        let obj = g
            .tables
            .get(c.name)
            .and_then(|t| t.get(reference))
            .ok_or_else(|| DbError::NotFound {
                class: c.name.to_string(),
                reference: reference.to_string(),
            })?;
        let mut new = obj.clone();
        let out = f(&mut new.rec);
        new.modified = gen;
        self.persist(c, reference, Some(&new), gen)?;
        g.gen = gen;
        g.tables
            .entry(c.name)
            .or_default()
            .insert(reference.to_string(), new);
        drop(g);
        self.notify.send_replace(gen);
        Ok(out)
    }

    /// Bump an object's generation without changing it (`event.inject`).
    pub fn touch(&self, cname: &str, reference: &str) -> Result<u64, DbError> {
        self.update(cname, reference, |_| ())?;
        Ok(self.generation())
    }

    pub fn delete(&self, cname: &str, reference: &str) -> Result<(), DbError> {
        let c = Self::cls(cname)?;
        let mut g = self.lock();
        let gen = g.gen + 1;
        let Some(obj) = g.tables.get(c.name).and_then(|t| t.get(reference)) else {
            return Err(DbError::NotFound {
                class: c.name.to_string(),
                reference: reference.to_string(),
            });
        };
        let uuid = obj
            .rec
            .get("uuid")
            .and_then(V::as_str)
            .unwrap_or("")
            .to_string();
        self.persist(c, reference, None, gen)?;
        g.gen = gen;
        if let Some(t) = g.tables.get_mut(c.name) {
            t.remove(reference);
        }
        g.deleted.push_back(Deleted {
            gen,
            class: c.name,
            reference: reference.to_string(),
            uuid,
        });
        while g.deleted.len() > MAX_DELETED {
            g.deleted.pop_front();
        }
        drop(g);
        self.notify.send_replace(gen);
        Ok(())
    }

    pub fn get(&self, cname: &str, reference: &str) -> Option<Record> {
        let c = class(cname)?;
        self.lock()
            .tables
            .get(c.name)
            .and_then(|t| t.get(reference))
            .map(|o| o.rec.clone())
    }

    pub fn exists(&self, cname: &str, reference: &str) -> bool {
        let Some(c) = class(cname) else { return false };
        self.lock()
            .tables
            .get(c.name)
            .is_some_and(|t| t.contains_key(reference))
    }

    pub fn all(&self, cname: &str) -> Vec<(String, Record)> {
        let Some(c) = class(cname) else { return vec![] };
        self.lock()
            .tables
            .get(c.name)
            .map(|t| t.iter().map(|(k, o)| (k.clone(), o.rec.clone())).collect())
            .unwrap_or_default()
    }

    pub fn refs(&self, cname: &str) -> Vec<String> {
        let Some(c) = class(cname) else { return vec![] };
        self.lock()
            .tables
            .get(c.name)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn count(&self, cname: &str) -> usize {
        let Some(c) = class(cname) else { return 0 };
        self.lock().tables.get(c.name).map_or(0, |t| t.len())
    }

    pub fn find_by_field(&self, cname: &str, field: &str, value: &str) -> Vec<String> {
        let Some(c) = class(cname) else { return vec![] };
        self.lock()
            .tables
            .get(c.name)
            .map(|t| {
                t.iter()
                    .filter(|(_, o)| o.rec.get(field).and_then(V::as_str) == Some(value))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A typed record.
    pub fn get_typed<T: Object>(&self, r: &Ref<T>) -> Option<T> {
        self.get(T::CLASS, r.as_str())
            .map(|rec| T::from_record(&rec))
    }

    /// Every record of a class, typed.
    pub fn all_typed<T: Object>(&self) -> Vec<(Ref<T>, T)> {
        self.all(T::CLASS)
            .into_iter()
            .map(|(r, rec)| (Ref::new(r), T::from_record(&rec)))
            .collect()
    }

    pub fn create_typed<T: Object>(&self, r: &Ref<T>, rec: &T) -> Result<u64, DbError> {
        self.create(T::CLASS, r.as_str(), rec.to_record())
    }

    /// Apply `f` to a typed record; bumps its generation. Returns f's result.
    pub fn update_typed<T: Object, X>(
        &self,
        r: &Ref<T>,
        f: impl FnOnce(&mut T) -> X,
    ) -> Result<X, DbError> {
        self.update(T::CLASS, r.as_str(), |rec| {
            let mut t = T::from_record(rec);
            let out = f(&mut t);
            *rec = t.to_record();
            out
        })
    }

    /// Changes with generation > `since` that `want(class, ref)` selects,
    /// in generation order, and the current generation.
    pub fn changes_since(
        &self,
        since: u64,
        want: impl Fn(&str, &str) -> bool,
    ) -> (Vec<Change>, u64) {
        let g = self.lock();
        let mut out = vec![];
        for (cname, t) in &g.tables {
            for (r, o) in t {
                if o.modified > since && want(cname, r) {
                    out.push(Change {
                        gen: o.modified,
                        class: cname,
                        reference: r.clone(),
                        operation: if o.created > since { "add" } else { "mod" },
                        snapshot: Some(o.rec.clone()),
                    });
                }
            }
        }
        for d in &g.deleted {
            if d.gen > since && want(d.class, &d.reference) {
                out.push(Change {
                    gen: d.gen,
                    class: d.class,
                    reference: d.reference.clone(),
                    operation: "del",
                    snapshot: None,
                });
            }
        }
        out.sort_by_key(|c| c.gen);
        (out, g.gen)
    }

    /// Generation of the oldest deletion still remembered (0 if none lost).
    pub fn oldest_deletion_kept(&self) -> u64 {
        let g = self.lock();
        if g.deleted.len() < MAX_DELETED {
            0
        } else {
            g.deleted.front().map_or(0, |d| d.gen)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = Db::open(&path).unwrap();
            let mut r = Record::new();
            r.insert("name_label".into(), V::str("p1"));
            db.create("pool", "OpaqueRef:p", r).unwrap();
            db.create("session", "OpaqueRef:s", Record::new()).unwrap();
            db.update("pool", "OpaqueRef:p", |r| {
                r.insert("name_label".into(), V::str("p2"));
            })
            .unwrap();
            let (ch, gen) = db.changes_since(1, |_, _| true);
            assert_eq!(gen, 3);
            assert_eq!(ch.len(), 2);
        }
        let db = Db::open(&path).unwrap();
        let r = db.get("pool", "OpaqueRef:p").unwrap();
        assert_eq!(r["name_label"], V::str("p2"));
        assert!(r.contains_key("cpu_info"));
        assert!(db.get("session", "OpaqueRef:s").is_none());
        assert!(db.generation() >= 3);
    }
}
