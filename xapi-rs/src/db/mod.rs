//! The object database.
//!
//! Storage engine: [`redb`], an embedded, pure-Rust, copy-on-write B-tree
//! store. Chosen over sqlite because (a) every `commit()` with the default
//! `Durability::Immediate` is fsync'd before it returns, so an acknowledged
//! write survives `kill -9` and power loss, (b) it builds quickly with no C
//! toolchain, and (c) our access pattern — whole-table reads served from
//! memory, small writes keyed by reference — needs no SQL. The schema is
//! generated from the API definition (the tables of
//! [`crate::generated::schema`]): one table per persistent class
//! (`obj_<class>`, key = reference, value = JSON of the record plus its
//! creation/modification generations) and a `meta` table holding the
//! generation ceiling. On load, records are normalised against the datamodel
//! (missing fields get their defaults, unknown fields are dropped), which is
//! the schema-upgrade path.
//!
//! **redb version.** We are on redb 4, whose file format (v3, introduced by
//! redb 3.0 and unchanged since) is the one redb keeps supporting; redb 2's
//! default v2 format cannot be opened by redb 3 or later, and moving off it
//! would need a migration through redb 2.6's `Database::upgrade()`. The
//! project moved before any user had data, so no database in v2 format
//! exists to migrate.
//!
//! **Writes.** A write is a [`Tx`]: a closure that reads (its own writes
//! included) and stages creates, updates and deletes; if it fails, nothing
//! is applied and no event is emitted. A staged transaction takes one
//! generation per change and is handed, in generation order, to a dedicated
//! writer thread, which commits every transaction waiting at that moment in
//! one redb commit (one fsync), then publishes their changes to the
//! in-memory state readers see, then acknowledges them. Callers return only
//! after the acknowledgement: async callers await it
//! ([`Db::transaction_async`]); sync callers on a runtime worker thread wait
//! in `block_in_place`, so the worker's other tasks move elsewhere. Readers
//! take the published state's read lock, which a writer holds only to
//! publish, never across a commit: a reader never waits for an fsync.
//!
//! **Volatile fields** ([`crate::model::Field::volatile`], from the
//! codegen overlay: utilisation and metrics timestamps
//! refreshed every minute) are not worth an fsync: a change that only
//! touches them is published and emits its event without a redb commit
//! (the value reaches disk with the object's next persistent change, and
//! is refreshed at start-up anyway). Generations stay monotonic across
//! restarts because the `meta` table holds a ceiling that writes may use up
//! to; a write beyond it commits a new one.
//!
//! **Events.** The published state indexes changes by generation: each live
//! object appears once, at its last modification, and each deletion leaves
//! a tombstone. `event.from`'s wake-up reads the index from its token on, so
//! its cost is the number of changes since, not the number of objects.
//! Tombstones are bounded (oldest forgotten first); a client whose token
//! predates a forgotten deletion is told so ([`Db::deletions_lost`]) instead
//! of silently missing it.

pub mod expr;

use crate::model::typed::{Object, Ref};
use crate::model::value::{default_of, Record, NULL_REF, V};
use crate::model::{class, Class, CLASSES, RELATIONS};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use tokio::sync::{oneshot, watch};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The `meta` key of the generation ceiling (see the module doc).
const GEN_CEILING: &str = "generation";
/// How many generations a ceiling commit reserves for volatile writes.
const GEN_RESERVE: u64 = 10_000;
/// Deletions remembered for `event.from`/`event.next` by default.
pub const MAX_TOMBSTONES: usize = 100_000;
/// Transactions committed together at most (bounds one commit's size).
const MAX_GROUP: usize = 256;

fn is_volatile(c: &Class, field: &str) -> bool {
    c.field(field).is_some_and(|f| f.volatile)
}

#[derive(Debug, Clone, thiserror::Error)]
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

/// The last change of an object, at its generation in the index.
#[derive(Debug, Clone)]
enum Entry {
    Live(&'static str, String),
    Gone {
        class: &'static str,
        reference: String,
        created: u64,
    },
}

/// What readers see: the state as of the last acknowledged commit.
#[derive(Default)]
struct State {
    gen: u64,
    tables: HashMap<&'static str, BTreeMap<String, Arc<Obj>>>,
    index: BTreeMap<u64, Entry>,
    /// Generations of the tombstones in `index`, oldest first.
    tombstones: VecDeque<u64>,
    max_tombstones: usize,
    /// Deletions at generations up to this one may have been forgotten.
    lost_up_to: u64,
}

impl State {
    fn get(&self, c: &str, r: &str) -> Option<&Arc<Obj>> {
        self.tables.get(c).and_then(|t| t.get(r))
    }

    fn apply(&mut self, w: &Write) {
        let table = self.tables.entry(w.class.name).or_default();
        let old = match &w.obj {
            Some(o) => table.insert(w.reference.clone(), o.clone()),
            None => table.remove(&w.reference),
        };
        if let Some(old) = &old {
            self.index.remove(&old.modified);
        }
        match (&w.obj, old) {
            (Some(_), _) => {
                self.index
                    .insert(w.gen, Entry::Live(w.class.name, w.reference.clone()));
            }
            (None, Some(old)) => {
                self.index.insert(
                    w.gen,
                    Entry::Gone {
                        class: w.class.name,
                        reference: w.reference.clone(),
                        created: old.created,
                    },
                );
                self.tombstones.push_back(w.gen);
                while self.tombstones.len() > self.max_tombstones {
                    if let Some(g) = self.tombstones.pop_front() {
                        self.index.remove(&g);
                        self.lost_up_to = self.lost_up_to.max(g);
                    }
                }
            }
            (None, None) => {}
        }
        self.gen = self.gen.max(w.gen);
    }
}

/// One staged change: the object's new value (`None`: deleted).
#[derive(Debug)]
struct Write {
    class: &'static Class,
    reference: String,
    obj: Option<Arc<Obj>>,
    gen: u64,
    /// Whether it must reach disk (false: a non-persistent class, or only
    /// volatile fields changed).
    persist: bool,
}

enum Ack {
    Sync(mpsc::SyncSender<Result<(), DbError>>),
    Async(oneshot::Sender<Result<(), DbError>>),
}

impl Ack {
    fn send(self, r: Result<(), DbError>) {
        // The caller may have gone (a dropped future): nothing to tell.
        match self {
            Ack::Sync(s) => {
                let _ = s.send(r);
            }
            Ack::Async(s) => {
                let _ = s.send(r);
            }
        }
    }
}

struct Batch {
    epoch: u64,
    writes: Vec<Write>,
    ack: Ack,
}

/// An object's identity: (class, reference).
type Key = (&'static str, String);

/// Staged but not yet published changes; guarded by the staging lock.
#[derive(Default)]
struct Stage {
    gen: u64,
    /// Bumped when a commit fails: batches staged before are void.
    epoch: u64,
    /// Latest staged value per object, with its generation.
    pending: HashMap<Key, (u64, Option<Arc<Obj>>)>,
}

struct Shared {
    published: RwLock<State>,
    stage: Mutex<Stage>,
    notify: watch::Sender<u64>,
    #[cfg(test)]
    hooks: test_hooks::Hooks,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.published.read().unwrap_or_else(|p| p.into_inner())
    }
    fn stage(&self) -> MutexGuard<'_, Stage> {
        self.stage.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Db {
    shared: Arc<Shared>,
    sender: Option<mpsc::Sender<Batch>>,
    writer: Option<std::thread::JoinHandle<()>>,
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

/// A reference field of a changed object whose target changed.
struct Link {
    one_class: &'static str,
    one_field: &'static str,
    old: String,
    new: String,
}

/// The relations of class `c` whose reference field differs between the
/// old and new record (None: absent).
fn links(c: &Class, old: Option<&Record>, new: Option<&Record>) -> Vec<Link> {
    let get = |r: Option<&Record>, f: &str| {
        r.and_then(|r| r.get(f))
            .and_then(V::as_str)
            .unwrap_or("")
            .to_string()
    };
    RELATIONS
        .iter()
        .filter(|(mc, ..)| *mc == c.name)
        .filter_map(|(_, mf, oc, of)| {
            let (o, n) = (get(old, mf), get(new, mf));
            (o != n).then_some(Link {
                one_class: oc,
                one_field: of,
                old: o,
                new: n,
            })
        })
        .collect()
}

fn cls(name: &str) -> Result<&'static Class, DbError> {
    class(name).ok_or_else(|| DbError::UnknownClass(name.to_string()))
}

fn stopped() -> DbError {
    DbError::Storage("the database writer stopped".into())
}

fn not_found(c: &Class, r: &str) -> DbError {
    DbError::NotFound {
        class: c.name.to_string(),
        reference: r.to_string(),
    }
}

/// What an [`Db::update`] closure returns: an `Err` aborts the update (the
/// record is left as it was, no event), anything else commits it.
pub trait Outcome {
    fn failed(&self) -> bool;
}

impl Outcome for () {
    fn failed(&self) -> bool {
        false
    }
}

impl<T, E> Outcome for Result<T, E> {
    fn failed(&self) -> bool {
        self.is_err()
    }
}

/// One change of a transaction, before it has a generation.
struct Op {
    class: &'static Class,
    reference: String,
    obj: Option<Obj>,
    persist: bool,
    /// A new object: its creation generation is this change's.
    create: bool,
}

/// A transaction in progress: reads see the database with this
/// transaction's own changes; the changes apply together, or not at all.
/// The closure must not call back into the [`Db`] to write (it holds the
/// staging lock).
pub struct Tx<'a> {
    shared: &'a Shared,
    stage: &'a Stage,
    ops: Vec<Op>,
    /// The latest value of every object this transaction touched.
    local: HashMap<Key, Option<Obj>>,
}

impl Tx<'_> {
    /// The object as this transaction sees it.
    fn current(&self, c: &'static Class, r: &str) -> Option<Obj> {
        let key = (c.name, r.to_string());
        if let Some(o) = self.local.get(&key) {
            return o.clone();
        }
        if let Some((_, o)) = self.stage.pending.get(&key) {
            return o.as_deref().cloned();
        }
        self.shared.read().get(c.name, r).map(|o| (**o).clone())
    }

    fn push(&mut self, op: Op) {
        self.local
            .insert((op.class.name, op.reference.clone()), op.obj.clone());
        self.ops.push(op);
    }

    pub fn get(&self, cname: &str, reference: &str) -> Option<Record> {
        let c = class(cname)?;
        self.current(c, reference).map(|o| o.rec)
    }

    pub fn exists(&self, cname: &str, reference: &str) -> bool {
        class(cname).is_some_and(|c| self.current(c, reference).is_some())
    }

    /// Creates (or replaces) an object.
    pub fn create(&mut self, cname: &str, reference: &str, mut rec: Record) -> Result<(), DbError> {
        let c = cls(cname)?;
        normalise(c, &mut rec);
        let old = self.current(c, reference).map(|o| o.rec);
        let links = links(c, old.as_ref(), Some(&rec));
        self.push(Op {
            class: c,
            reference: reference.to_string(),
            obj: Some(Obj {
                rec,
                created: 0,
                modified: 0,
            }),
            persist: c.persistent,
            create: true,
        });
        self.relink(reference, links)
    }

    /// Keeps the set side of each relation in step with a change of `r`'s
    /// reference fields (see [`RELATIONS`]): `r` leaves the old target's set
    /// and joins the new one's. Targets that do not exist are left alone.
    fn relink(&mut self, r: &str, links: Vec<Link>) -> Result<(), DbError> {
        for l in links {
            for (target, add) in [(&l.old, false), (&l.new, true)] {
                if target.is_empty() || target == NULL_REF || !self.exists(l.one_class, target) {
                    continue;
                }
                self.update(l.one_class, target, |rec| {
                    let mut set = match rec.remove(l.one_field) {
                        Some(V::A(a)) => a,
                        _ => vec![],
                    };
                    set.retain(|x| x.as_str() != Some(r));
                    if add {
                        set.push(V::S(r.to_string()));
                    }
                    rec.insert(l.one_field.to_string(), V::A(set));
                })?;
            }
        }
        Ok(())
    }

    /// Applies `f` to an object's record; an `Err` from `f` aborts (see
    /// [`Outcome`]) without changing the transaction.
    pub fn update<T: Outcome>(
        &mut self,
        cname: &str,
        reference: &str,
        f: impl FnOnce(&mut Record) -> T,
    ) -> Result<T, DbError> {
        let c = cls(cname)?;
        let old = self
            .current(c, reference)
            .ok_or_else(|| not_found(c, reference))?;
        let mut new = old.clone();
        let out = f(&mut new.rec);
        if out.failed() {
            return Ok(out);
        }
        let links = links(c, Some(&old.rec), Some(&new.rec));
        let only_volatile = new
            .rec
            .iter()
            .filter(|(k, v)| old.rec.get(*k) != Some(v))
            .map(|(k, _)| k)
            .chain(old.rec.keys().filter(|k| !new.rec.contains_key(*k)))
            .all(|k| is_volatile(c, k));
        self.push(Op {
            class: c,
            reference: reference.to_string(),
            obj: Some(new),
            persist: c.persistent && !only_volatile,
            create: false,
        });
        self.relink(reference, links)?;
        Ok(out)
    }

    pub fn delete(&mut self, cname: &str, reference: &str) -> Result<(), DbError> {
        let c = cls(cname)?;
        let Some(old) = self.current(c, reference) else {
            return Err(not_found(c, reference));
        };
        let links = links(c, Some(&old.rec), None);
        self.push(Op {
            class: c,
            reference: reference.to_string(),
            obj: None,
            persist: c.persistent,
            create: false,
        });
        self.relink(reference, links)
    }

    /// Bumps an object's generation without changing it (`event.inject`);
    /// nothing to write to disk.
    pub fn touch(&mut self, cname: &str, reference: &str) -> Result<(), DbError> {
        self.update(cname, reference, |_| ())
    }
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        Self::open_with(path, MAX_TOMBSTONES)
    }

    /// As [`Db::open`], remembering at most `max_tombstones` deletions.
    pub fn open_with(path: &Path, max_tombstones: usize) -> Result<Db, DbError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let redb = redb::Database::create(path).map_err(st)?;
        let tx = redb.begin_write().map_err(st)?;
        let mut state = State {
            max_tombstones: max_tombstones.max(1),
            ..State::default()
        };
        let mut ceiling = 0;
        {
            let meta = tx.open_table(META).map_err(st)?;
            if let Some(g) = meta.get(GEN_CEILING).map_err(st)? {
                ceiling = g.value();
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
                                ceiling = ceiling.max(o.modified);
                                objs.insert(k.value().to_string(), Arc::new(o));
                            }
                            Err(e) => {
                                tracing::warn!("dropping undecodable {} {}: {e}", c.name, k.value())
                            }
                        }
                    }
                }
                for (r, o) in &objs {
                    state
                        .index
                        .insert(o.modified, Entry::Live(c.name, r.clone()));
                }
                state.tables.insert(c.name, objs);
            }
        }
        tx.commit().map_err(st)?;
        // Volatile writes before a restart may have used generations up to
        // the ceiling: start above it, so tokens never go backwards.
        state.gen = ceiling;
        let (notify, _) = watch::channel(ceiling);
        let shared = Arc::new(Shared {
            published: RwLock::new(state),
            stage: Mutex::new(Stage {
                gen: ceiling,
                ..Stage::default()
            }),
            notify,
            #[cfg(test)]
            hooks: Default::default(),
        });
        let (sender, rx) = mpsc::channel();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("db-writer".into())
                .spawn(move || writer(redb, shared, rx, ceiling))
                .map_err(|e| DbError::Storage(format!("starting the writer thread: {e}")))?
        };
        Ok(Db {
            shared,
            sender: Some(sender),
            writer: Some(writer),
        })
    }

    /// Runs `f` as one transaction and waits until it is durable (or
    /// published, if it changed only what is not persisted). If `f` fails,
    /// nothing changes.
    pub fn transaction<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(f).map(|(out, _)| out)
    }

    /// [`Db::transaction`], also returning the generation of its last change
    /// (the current one if it changed nothing).
    fn run<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, E>,
    ) -> Result<(T, u64), E> {
        let (tx, rx) = mpsc::sync_channel(1);
        let (out, gen) = self.stage(f, Ack::Sync(tx))?;
        let Some(gen) = gen else {
            return Ok((out, self.generation()));
        };
        let wait = || rx.recv();
        let res = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        res.map_err(|_| stopped())??;
        Ok((out, gen))
    }

    /// As [`Db::transaction`], awaiting the commit instead of blocking.
    pub async fn transaction_async<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let (tx, rx) = oneshot::channel();
        let (out, gen) = self.stage(f, Ack::Async(tx))?;
        if gen.is_some() {
            rx.await.map_err(|_| stopped())??;
        }
        Ok(out)
    }

    /// Runs `f` under the staging lock; on success, gives its changes their
    /// generations and hands them to the writer. Returns f's result and the
    /// generation of its last change, if it made any.
    fn stage<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, E>,
        ack: Ack,
    ) -> Result<(T, Option<u64>), E> {
        let mut stage = self.shared.stage();
        let mut tx = Tx {
            shared: &self.shared,
            stage: &stage,
            ops: vec![],
            local: HashMap::new(),
        };
        let out = f(&mut tx)?;
        let ops = std::mem::take(&mut tx.ops);
        drop(tx);
        if ops.is_empty() {
            return Ok((out, None));
        }
        let mut writes = Vec::with_capacity(ops.len());
        let mut created_here: HashMap<Key, u64> = HashMap::new();
        for op in ops {
            stage.gen += 1;
            let gen = stage.gen;
            let key = (op.class.name, op.reference.clone());
            let obj = op.obj.map(|mut o| {
                if op.create {
                    created_here.insert(key.clone(), gen);
                    o.created = gen;
                } else if o.created == 0 {
                    // Created earlier in this transaction.
                    o.created = created_here.get(&key).copied().unwrap_or(gen);
                }
                o.modified = gen;
                Arc::new(o)
            });
            stage.pending.insert(key, (gen, obj.clone()));
            writes.push(Write {
                class: op.class,
                reference: op.reference,
                obj,
                gen,
                persist: op.persist,
            });
        }
        let gen = stage.gen;
        let batch = Batch {
            epoch: stage.epoch,
            writes,
            ack,
        };
        // Sent under the staging lock, so batches reach the writer in
        // generation order.
        let sent = self.sender.as_ref().is_some_and(|s| s.send(batch).is_ok());
        if !sent {
            return Err(stopped().into());
        }
        Ok((out, Some(gen)))
    }

    pub fn generation(&self) -> u64 {
        self.shared.read().gen
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.notify.subscribe()
    }

    pub fn create(&self, cname: &str, reference: &str, rec: Record) -> Result<u64, DbError> {
        Ok(self.run(|tx| tx.create(cname, reference, rec))?.1)
    }

    /// Apply `f` to a record; bumps its generation. Returns f's result. If
    /// `f` returns an `Err`, the record is left unchanged (see [`Outcome`]).
    pub fn update<T: Outcome>(
        &self,
        cname: &str,
        reference: &str,
        f: impl FnOnce(&mut Record) -> T,
    ) -> Result<T, DbError> {
        self.transaction(|tx| tx.update(cname, reference, f))
    }

    /// Bump an object's generation without changing it (`event.inject`);
    /// returns the generation of that change.
    pub fn touch(&self, cname: &str, reference: &str) -> Result<u64, DbError> {
        Ok(self.run(|tx| tx.touch(cname, reference))?.1)
    }

    pub fn delete(&self, cname: &str, reference: &str) -> Result<(), DbError> {
        self.transaction(|tx| tx.delete(cname, reference))
    }

    pub fn get(&self, cname: &str, reference: &str) -> Option<Record> {
        let c = class(cname)?;
        self.shared
            .read()
            .get(c.name, reference)
            .map(|o| o.rec.clone())
    }

    pub fn exists(&self, cname: &str, reference: &str) -> bool {
        let Some(c) = class(cname) else { return false };
        self.shared.read().get(c.name, reference).is_some()
    }

    pub fn all(&self, cname: &str) -> Vec<(String, Record)> {
        let Some(c) = class(cname) else { return vec![] };
        self.shared
            .read()
            .tables
            .get(c.name)
            .map(|t| t.iter().map(|(k, o)| (k.clone(), o.rec.clone())).collect())
            .unwrap_or_default()
    }

    pub fn refs(&self, cname: &str) -> Vec<String> {
        let Some(c) = class(cname) else { return vec![] };
        self.shared
            .read()
            .tables
            .get(c.name)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn count(&self, cname: &str) -> usize {
        let Some(c) = class(cname) else { return 0 };
        self.shared.read().tables.get(c.name).map_or(0, |t| t.len())
    }

    pub fn find_by_field(&self, cname: &str, field: &str, value: &str) -> Vec<String> {
        let Some(c) = class(cname) else { return vec![] };
        self.shared
            .read()
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
    pub fn update_typed<T: Object, X: Outcome>(
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
    /// in generation order, and the current generation. Each object is
    /// reported once, at its last change; as in the reference, an object
    /// created and deleted since `since` is not reported at all. Costs the
    /// number of changes since `since`, not the number of objects.
    pub fn changes_since(
        &self,
        since: u64,
        want: impl Fn(&str, &str) -> bool,
    ) -> (Vec<Change>, u64) {
        let s = self.shared.read();
        let mut out = vec![];
        for (gen, e) in s.index.range(since.saturating_add(1)..) {
            match e {
                Entry::Live(c, r) => {
                    if !want(c, r) {
                        continue;
                    }
                    if let Some(o) = s.get(c, r) {
                        out.push(Change {
                            gen: *gen,
                            class: c,
                            reference: r.clone(),
                            operation: if o.created > since { "add" } else { "mod" },
                            snapshot: Some(o.rec.clone()),
                        });
                    }
                }
                Entry::Gone {
                    class,
                    reference,
                    created,
                } => {
                    if *created <= since && want(class, reference) {
                        out.push(Change {
                            gen: *gen,
                            class,
                            reference: reference.clone(),
                            operation: "del",
                            snapshot: None,
                        });
                    }
                }
            }
        }
        (out, s.gen)
    }

    /// Whether a client that has seen everything up to `since` may have
    /// missed a deletion we no longer remember (the reference's
    /// `EVENTS_LOST`). A client starting from scratch (0) misses nothing.
    pub fn deletions_lost(&self, since: u64) -> bool {
        since > 0 && since < self.shared.read().lost_up_to
    }

    /// Generation up to which deletions may have been forgotten (0 if none).
    pub fn oldest_deletion_kept(&self) -> u64 {
        self.shared.read().lost_up_to
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // Closing the channel stops the writer once it has drained it; wait,
        // so the file is closed (and reopenable) when `drop` returns.
        self.sender.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The writer thread: commits each group of waiting batches in one redb
/// transaction, publishes them, then acknowledges them.
fn writer(redb: redb::Database, shared: Arc<Shared>, rx: mpsc::Receiver<Batch>, mut ceiling: u64) {
    let mut epoch = 0;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(b) => group.push(b),
                Err(_) => break,
            }
        }
        let (group, void): (Vec<Batch>, Vec<Batch>) =
            group.into_iter().partition(|b| b.epoch == epoch);
        for b in void {
            b.ack.send(Err(DbError::Storage(
                "an earlier write this one depended on failed".into(),
            )));
        }
        let Some(last) = group.iter().flat_map(|b| &b.writes).map(|w| w.gen).max() else {
            continue;
        };
        let persist = group.iter().flat_map(|b| &b.writes).any(|w| w.persist);
        let res = if persist || last > ceiling {
            let new_ceiling = last.max(ceiling) + GEN_RESERVE * u64::from(last > ceiling);
            commit(&redb, &shared, &group, new_ceiling).map(|()| ceiling = new_ceiling)
        } else {
            Ok(())
        };
        match res {
            Ok(()) => {
                {
                    let mut s = shared.published.write().unwrap_or_else(|p| p.into_inner());
                    for w in group.iter().flat_map(|b| &b.writes) {
                        s.apply(w);
                    }
                }
                shared.notify.send_replace(last);
                shared.stage().pending.retain(|_, (gen, _)| *gen > last);
                for b in group {
                    b.ack.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!("database commit failed: {e}");
                // Everything staged since is built on what did not happen.
                {
                    let mut stage = shared.stage();
                    stage.epoch += 1;
                    stage.pending.clear();
                    stage.gen = shared.read().gen;
                }
                epoch += 1;
                for b in group {
                    b.ack.send(Err(e.clone()));
                }
            }
        }
    }
}

fn commit(
    redb: &redb::Database,
    shared: &Shared,
    group: &[Batch],
    ceiling: u64,
) -> Result<(), DbError> {
    #[cfg(test)]
    shared.hooks.before_commit()?;
    #[cfg(not(test))]
    let _ = shared;
    let tx = redb.begin_write().map_err(st)?;
    {
        for w in group.iter().flat_map(|b| &b.writes).filter(|w| w.persist) {
            let mut t = tx.open_table(table_def(w.class)).map_err(st)?;
            match &w.obj {
                Some(o) => {
                    let bytes =
                        serde_json::to_vec(&**o).map_err(|e| DbError::Storage(e.to_string()))?;
                    t.insert(w.reference.as_str(), bytes.as_slice())
                        .map_err(st)?;
                }
                None => {
                    t.remove(w.reference.as_str()).map_err(st)?;
                }
            }
        }
        let mut meta = tx.open_table(META).map_err(st)?;
        meta.insert(GEN_CEILING, ceiling).map_err(st)?;
    }
    tx.commit().map_err(st)?;
    #[cfg(test)]
    shared.hooks.committed();
    Ok(())
}

#[cfg(test)]
mod test_hooks {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{mpsc, Mutex};

    /// Lets tests hold a commit half-way and count commits.
    #[derive(Default)]
    pub struct Hooks {
        /// (tell the test the commit started, wait for its go-ahead)
        pub gate: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
        pub fail_next: Mutex<bool>,
        pub commits: AtomicU64,
    }

    impl Hooks {
        pub fn before_commit(&self) -> Result<(), super::DbError> {
            let gate = self.gate.lock().unwrap().take();
            if let Some((started, go)) = gate {
                let _ = started.send(());
                let _ = go.recv();
            }
            if std::mem::take(&mut *self.fail_next.lock().unwrap()) {
                return Err(super::DbError::Storage("injected failure".into()));
            }
            Ok(())
        }
        pub fn committed(&self) {
            self.commits.fetch_add(1, Ordering::SeqCst);
        }
        pub fn commits(&self) -> u64 {
            self.commits.load(Ordering::SeqCst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, V)]) -> Record {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn label(db: &Db, r: &str) -> V {
        db.get("pool", r).unwrap()["name_label"].clone()
    }

    #[test]
    fn relations_keep_the_set_side_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let vbds = |vm: &str| db.get("VM", vm).unwrap()["VBDs"].clone();
        let s = |x: &str| V::S(x.into());
        db.create("VM", "OpaqueRef:vm1", rec(&[("uuid", s("1"))]))
            .unwrap();
        db.create("VM", "OpaqueRef:vm2", rec(&[("uuid", s("2"))]))
            .unwrap();
        db.create("VBD", "OpaqueRef:b1", rec(&[("VM", s("OpaqueRef:vm1"))]))
            .unwrap();
        db.create("VBD", "OpaqueRef:b2", rec(&[("VM", s("OpaqueRef:vm1"))]))
            .unwrap();
        assert_eq!(
            vbds("OpaqueRef:vm1"),
            V::A(vec![s("OpaqueRef:b1"), s("OpaqueRef:b2")])
        );
        // Moving a VBD moves it between the sets, in one transaction.
        db.update("VBD", "OpaqueRef:b1", |r| {
            r.insert("VM".into(), s("OpaqueRef:vm2"));
        })
        .unwrap();
        assert_eq!(vbds("OpaqueRef:vm1"), V::A(vec![s("OpaqueRef:b2")]));
        assert_eq!(vbds("OpaqueRef:vm2"), V::A(vec![s("OpaqueRef:b1")]));
        db.delete("VBD", "OpaqueRef:b2").unwrap();
        assert_eq!(vbds("OpaqueRef:vm1"), V::A(vec![]));
        // A failed transaction changes neither side.
        let r: Result<(), DbError> = db.transaction(|tx| {
            tx.create("VBD", "OpaqueRef:b3", rec(&[("VM", s("OpaqueRef:vm1"))]))?;
            tx.delete("VBD", "OpaqueRef:nonesuch")
        });
        assert!(r.is_err());
        assert_eq!(vbds("OpaqueRef:vm1"), V::A(vec![]));
        assert!(!db.exists("VBD", "OpaqueRef:b3"));
        // A reference to a missing object is kept, and touches nothing.
        db.create("VBD", "OpaqueRef:b4", rec(&[("VM", s("OpaqueRef:gone"))]))
            .unwrap();
        assert!(!db.exists("VM", "OpaqueRef:gone"));
    }

    #[test]
    fn persist_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let gen;
        {
            let db = Db::open(&path).unwrap();
            db.create("pool", "OpaqueRef:p", rec(&[("name_label", V::str("p1"))]))
                .unwrap();
            let since = db.generation();
            db.create("session", "OpaqueRef:s", Record::new()).unwrap();
            db.update("pool", "OpaqueRef:p", |r| {
                r.insert("name_label".into(), V::str("p2"));
            })
            .unwrap();
            let (ch, g) = db.changes_since(since, |_, _| true);
            assert_eq!(g, since + 2);
            assert_eq!(ch.len(), 2);
            gen = g;
        }
        let db = Db::open(&path).unwrap();
        let r = db.get("pool", "OpaqueRef:p").unwrap();
        assert_eq!(r["name_label"], V::str("p2"));
        assert!(r.contains_key("cpu_info"));
        assert!(db.get("session", "OpaqueRef:s").is_none());
        assert!(db.generation() >= gen);
    }

    /// A reader is served while a writer is in the middle of its commit
    /// (its fsync), and sees the state before that write.
    #[test]
    fn readers_do_not_wait_for_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("db")).unwrap());
        db.create("pool", "OpaqueRef:p", rec(&[("name_label", V::str("old"))]))
            .unwrap();
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        *db.shared.hooks.gate.lock().unwrap() = Some((started_tx, go_rx));
        let w = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.update("pool", "OpaqueRef:p", |r| {
                    r.insert("name_label".into(), V::str("new"));
                })
            })
        };
        started
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        // The writer is now held inside its commit: readers still answer.
        let reader = {
            let db = db.clone();
            std::thread::spawn(move || (label(&db, "OpaqueRef:p"), db.all("pool").len()))
        };
        let (seen, n) = reader.join().unwrap();
        assert_eq!(seen, V::str("old"));
        assert_eq!(n, 1);
        assert!(
            !w.is_finished(),
            "the write was acknowledged before its commit"
        );
        go.send(()).unwrap();
        w.join().unwrap().unwrap();
        assert_eq!(label(&db, "OpaqueRef:p"), V::str("new"));
    }

    /// A transaction that fails half-way changes nothing and emits no event.
    #[test]
    fn failed_transaction_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        db.create("pool", "OpaqueRef:p", rec(&[("name_label", V::str("a"))]))
            .unwrap();
        db.create("host", "OpaqueRef:h", Record::new()).unwrap();
        let gen = db.generation();
        let commits = db.shared.hooks.commits();
        let mut rx = db.subscribe();
        rx.borrow_and_update();
        let r: Result<(), DbError> = db.transaction(|tx| {
            tx.update("pool", "OpaqueRef:p", |r| {
                r.insert("name_label".into(), V::str("b"));
            })?;
            tx.delete("host", "OpaqueRef:h")?;
            assert!(
                !tx.exists("host", "OpaqueRef:h"),
                "a tx sees its own writes"
            );
            tx.delete("host", "OpaqueRef:missing")
        });
        assert!(matches!(r, Err(DbError::NotFound { .. })));
        // An update whose closure fails (e.g. MAP_DUPLICATE_KEY) aborts too.
        let r = db
            .update("pool", "OpaqueRef:p", |r| {
                r.insert("name_label".into(), V::str("c"));
                Err::<(), _>("MAP_DUPLICATE_KEY")
            })
            .unwrap();
        assert_eq!(r, Err("MAP_DUPLICATE_KEY"));
        assert_eq!(label(&db, "OpaqueRef:p"), V::str("a"));
        assert!(db.exists("host", "OpaqueRef:h"));
        assert_eq!(db.generation(), gen);
        assert_eq!(db.changes_since(gen, |_, _| true).0.len(), 0);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(db.shared.hooks.commits(), commits);
    }

    /// A transaction over several objects is one commit; its changes appear
    /// together, one generation each.
    #[test]
    fn transaction_applies_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = Db::open(&path).unwrap();
        db.create("host", "OpaqueRef:a", Record::new()).unwrap();
        db.create("host", "OpaqueRef:b", Record::new()).unwrap();
        let gen = db.generation();
        let commits = db.shared.hooks.commits();
        db.transaction(|tx| {
            tx.delete("host", "OpaqueRef:a")?;
            tx.delete("host", "OpaqueRef:b")?;
            tx.create("host", "OpaqueRef:c", Record::new())
        })
        .unwrap();
        assert_eq!(db.shared.hooks.commits(), commits + 1);
        let (ch, g) = db.changes_since(gen, |_, _| true);
        let ops: Vec<_> = ch.iter().map(|c| (c.gen, c.operation)).collect();
        assert_eq!(ops, [(gen + 1, "del"), (gen + 2, "del"), (gen + 3, "add")]);
        assert_eq!(g, gen + 3);
        drop(db);
        let db = Db::open(&path).unwrap();
        assert_eq!(db.refs("host"), ["OpaqueRef:c"]);
    }

    /// A commit that fails voids its transaction (nothing published, no
    /// event) and the database goes on.
    #[test]
    fn failed_commit_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        db.create("pool", "OpaqueRef:p", rec(&[("name_label", V::str("a"))]))
            .unwrap();
        let gen = db.generation();
        *db.shared.hooks.fail_next.lock().unwrap() = true;
        let r = db.update("pool", "OpaqueRef:p", |r| {
            r.insert("name_label".into(), V::str("b"));
        });
        assert!(matches!(r, Err(DbError::Storage(_))), "{r:?}");
        assert_eq!(label(&db, "OpaqueRef:p"), V::str("a"));
        assert_eq!(db.generation(), gen);
        db.update("pool", "OpaqueRef:p", |r| {
            r.insert("name_label".into(), V::str("c"));
        })
        .unwrap();
        assert_eq!(label(&db, "OpaqueRef:p"), V::str("c"));
        assert_eq!(db.changes_since(gen, |_, _| true).0.len(), 1);
    }

    /// Volatile fields change in memory with an event, without a commit;
    /// generations still never go backwards over a restart.
    #[test]
    fn volatile_fields_are_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let seen;
        {
            let db = Db::open(&path).unwrap();
            db.create(
                "host_cpu",
                "OpaqueRef:c",
                rec(&[("utilisation", V::F(0.1))]),
            )
            .unwrap();
            let commits = db.shared.hooks.commits();
            let gen = db.generation();
            for i in 0..5 {
                db.update("host_cpu", "OpaqueRef:c", |r| {
                    r.insert("utilisation".into(), V::F(f64::from(i) / 4.0));
                })
                .unwrap();
            }
            assert_eq!(
                db.shared.hooks.commits(),
                commits,
                "a volatile write was committed"
            );
            let (ch, g) = db.changes_since(gen, |_, _| true);
            assert_eq!(ch.len(), 1);
            assert_eq!(ch[0].snapshot.as_ref().unwrap()["utilisation"], V::F(1.0));
            assert_eq!(g, gen + 5);
            // A persistent field of the same class is committed.
            db.update("host_cpu", "OpaqueRef:c", |r| {
                r.insert("vendor".into(), V::str("v"));
            })
            .unwrap();
            assert_eq!(db.shared.hooks.commits(), commits + 1);
            db.update("host_cpu", "OpaqueRef:c", |r| {
                r.insert("utilisation".into(), V::F(0.9));
            })
            .unwrap();
            seen = db.generation();
        }
        let db = Db::open(&path).unwrap();
        let r = db.get("host_cpu", "OpaqueRef:c").unwrap();
        assert_eq!(r["vendor"], V::str("v"));
        assert_eq!(
            r["utilisation"],
            V::F(1.0),
            "last committed with the vendor"
        );
        assert!(db.generation() >= seen, "generation went backwards");
    }

    /// Deletions are never silently lost: a token older than the oldest
    /// remembered deletion is told so; newer ones get every deletion.
    #[test]
    fn deletions_are_reported_or_declared_lost() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_with(&dir.path().join("db"), 3).unwrap();
        for i in 0..5 {
            db.create("host", &format!("OpaqueRef:{i}"), Record::new())
                .unwrap();
        }
        let before = db.generation();
        for i in 0..2 {
            db.delete("host", &format!("OpaqueRef:{i}")).unwrap();
        }
        let (ch, _) = db.changes_since(before, |_, _| true);
        assert_eq!(ch.iter().filter(|c| c.operation == "del").count(), 2);
        assert!(!db.deletions_lost(before));
        let middle = db.generation();
        for i in 2..5 {
            db.delete("host", &format!("OpaqueRef:{i}")).unwrap();
        }
        // Five deletions, three remembered: `before` missed some, `middle` none.
        assert!(db.deletions_lost(before));
        assert!(!db.deletions_lost(middle));
        assert!(!db.deletions_lost(0));
        let (ch, _) = db.changes_since(middle, |_, _| true);
        let dels: Vec<_> = ch.iter().map(|c| c.reference.as_str()).collect();
        assert_eq!(dels, ["OpaqueRef:2", "OpaqueRef:3", "OpaqueRef:4"]);
    }

    /// A wake-up looks at the changes since its token, not at every object.
    #[test]
    fn changes_since_costs_changes_not_objects() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        db.transaction(|tx| {
            for i in 0..20_000 {
                tx.create("task", &format!("OpaqueRef:{i}"), Record::new())?;
            }
            Ok::<_, DbError>(())
        })
        .unwrap();
        let gen = db.generation();
        db.update("task", "OpaqueRef:7", |r| {
            r.insert("progress".into(), V::F(0.5));
        })
        .unwrap();
        db.delete("task", "OpaqueRef:8").unwrap();
        let looked = std::sync::atomic::AtomicUsize::new(0);
        let (ch, _) = db.changes_since(gen, |_, _| {
            looked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        });
        assert_eq!(ch.len(), 2);
        assert_eq!(looked.into_inner(), 2);
    }

    /// Sync writes from a multi-threaded runtime's worker do not block it:
    /// other tasks keep running while one waits for its commit.
    #[test]
    fn sync_writes_on_the_runtime_do_not_stall_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("db")).unwrap());
        db.create("pool", "OpaqueRef:p", Record::new()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        *db.shared.hooks.gate.lock().unwrap() = Some((started_tx, go_rx));
        rt.block_on(async {
            let w = {
                let db = db.clone();
                tokio::spawn(async move {
                    db.update("pool", "OpaqueRef:p", |r| {
                        r.insert("name_label".into(), V::str("x"));
                    })
                })
            };
            tokio::task::spawn_blocking(move || started.recv().unwrap())
                .await
                .unwrap();
            // The only worker thread is in the write; this task still runs.
            let db2 = db.clone();
            let r = tokio::spawn(async move { db2.generation() });
            let r = tokio::time::timeout(std::time::Duration::from_secs(10), r).await;
            go.send(()).unwrap();
            assert!(
                r.is_ok(),
                "the runtime stalled while a write waited for its commit"
            );
            w.await.unwrap().unwrap();
            db.transaction_async(|tx| {
                tx.update("pool", "OpaqueRef:p", |r| {
                    r.insert("name_label".into(), V::str("y"));
                })
            })
            .await
            .unwrap();
        });
        assert_eq!(label(&db, "OpaqueRef:p"), V::str("y"));
    }
}
