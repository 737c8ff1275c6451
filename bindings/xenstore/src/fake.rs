//! An in-process xenstored speaking the real wire protocol, for tests of
//! this client and of code built on it. It models what clients observe:
//! nodes with values and permissions, implicit parents, recursive rm,
//! watches (with the immediate first event), transactions that fail with
//! EAGAIN when a node they touched was changed by someone else, and the
//! `@introduceDomain`/`@releaseDomain` special watches. Connections are
//! dom0 (privileged) unless made with [`FakeXenstored::connect_as`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use crate::perms::{Access, Perm};
use crate::wire::{nul_fields, split_fields, Msg, Op};
use crate::Xenstore;

#[derive(Clone, Debug)]
struct Node {
    value: Vec<u8>,
    perms: Vec<Perm>,
    gen: u64,
}

type Tree = BTreeMap<String, Node>;

#[derive(Clone, Debug)]
enum Change {
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    SetPerms(String, Vec<Perm>),
}

struct Tx {
    tree: Tree,
    base: Tree,
    touched: BTreeSet<String>,
    log: Vec<Change>,
}

#[derive(Default)]
struct State {
    tree: Tree,
    gen: u64,
    next_tx: u32,
    next_conn: u64,
    txs: HashMap<u32, Tx>,
    // (connection, path, token)
    watches: Vec<(u64, String, String)>,
    conns: HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>,
    domains: BTreeSet<u32>,
}

/// The fake daemon; clone to share it between test tasks.
#[derive(Clone)]
pub struct FakeXenstored {
    st: Arc<Mutex<State>>,
}

impl Default for FakeXenstored {
    fn default() -> Self {
        Self::new()
    }
}

fn parent(p: &str) -> Option<&str> {
    if p == "/" {
        return None;
    }
    match p.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&p[..i]),
        None => None,
    }
}

fn valid_path(p: &str) -> bool {
    let ok_chars = p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/_-@.".contains(c));
    (p.starts_with('/') || p.starts_with('@'))
        && ok_chars
        && !p.contains("//")
        && (p == "/" || !p.ends_with('/'))
        && p.len() <= 3072
}

fn can(perms: &[Perm], domid: u32, want: Access) -> bool {
    if domid == 0 {
        return true;
    }
    let owner = perms.first();
    if owner.is_some_and(|o| o.domid == domid) {
        return true;
    }
    let a = perms
        .iter()
        .skip(1)
        .find(|p| p.domid == domid)
        .or(owner)
        .map_or(Access::None, |p| p.access);
    a == Access::Both || a == want
}

type Reply = Result<Vec<u8>, &'static str>;

impl State {
    fn tree_mut(&mut self, tx: u32) -> Result<&mut Tree, &'static str> {
        if tx == 0 {
            Ok(&mut self.tree)
        } else {
            self.txs.get_mut(&tx).map(|t| &mut t.tree).ok_or("ENOENT")
        }
    }

    fn fire(&self, changed: &str, removed: bool) {
        for (conn, w, token) in &self.watches {
            let hit = changed == w || changed.starts_with(&format!("{w}/")) || w == "/";
            let below = removed && w.starts_with(&format!("{changed}/"));
            if hit || below {
                let path = if below { w.as_str() } else { changed };
                self.event(*conn, path, token);
            }
        }
    }

    fn event(&self, conn: u64, path: &str, token: &str) {
        if let Some(tx) = self.conns.get(&conn) {
            let m = Msg::new(
                Op::WatchEvent,
                0,
                0,
                nul_fields(&[path.as_bytes(), token.as_bytes()]),
            );
            let _ = tx.send(m.encode());
        }
    }

    /// Applies a change to a tree; returns whether anything was removed.
    fn apply(tree: &mut Tree, gen: u64, c: &Change, domid: u32) -> Result<(), &'static str> {
        match c {
            Change::Write(p, _) | Change::Mkdir(p) if p.starts_with('@') => Err("EINVAL"),
            Change::Write(p, v) => {
                Self::ensure(tree, p, gen, domid)?;
                let n = tree.get_mut(p).expect("just ensured");
                n.value = v.clone();
                n.gen = gen;
                Ok(())
            }
            Change::Mkdir(p) => Self::ensure(tree, p, gen, domid),
            Change::Rm(p) => {
                if p == "/" {
                    return Err("EINVAL");
                }
                if !tree.contains_key(p) {
                    // Like xenstored: removing a missing child of an existing node is fine.
                    return match parent(p).and_then(|q| tree.get(q)) {
                        Some(_) => Ok(()),
                        None => Err("ENOENT"),
                    };
                }
                let perms = &tree[parent(p).unwrap_or("/")].perms;
                if !can(perms, domid, Access::Write) {
                    return Err("EACCES");
                }
                let prefix = format!("{p}/");
                tree.retain(|k, _| k != p && !k.starts_with(&prefix));
                Ok(())
            }
            Change::SetPerms(p, perms) => {
                let n = tree.get_mut(p).ok_or("ENOENT")?;
                if !can(&n.perms, domid, Access::Write) || perms.is_empty() {
                    return Err(if perms.is_empty() { "EINVAL" } else { "EACCES" });
                }
                n.perms = perms.clone();
                n.gen = gen;
                Ok(())
            }
        }
    }

    fn ensure(tree: &mut Tree, p: &str, gen: u64, domid: u32) -> Result<(), &'static str> {
        if tree.contains_key(p) {
            return if can(&tree[p].perms, domid, Access::Write) {
                Ok(())
            } else {
                Err("EACCES")
            };
        }
        let par = parent(p).ok_or("EINVAL")?;
        Self::ensure(tree, par, gen, domid)?;
        // New nodes inherit the parent's permissions, owned by the creator.
        let mut perms = tree[par].perms.clone();
        perms[0].domid = domid;
        tree.insert(
            p.to_string(),
            Node {
                value: Vec::new(),
                perms,
                gen,
            },
        );
        Ok(())
    }

    fn change(&mut self, tx: u32, c: Change, domid: u32) -> Reply {
        self.gen += 1;
        let gen = self.gen;
        if tx == 0 {
            Self::apply(&mut self.tree, gen, &c, domid)?;
            let (p, removed) = match &c {
                Change::Write(p, _) | Change::Mkdir(p) | Change::SetPerms(p, _) => (p, false),
                Change::Rm(p) => (p, true),
            };
            self.fire(p, removed);
        } else {
            let t = self.txs.get_mut(&tx).ok_or("ENOENT")?;
            Self::apply(&mut t.tree, gen, &c, domid)?;
            let p = match &c {
                Change::Write(p, _) | Change::Mkdir(p) | Change::SetPerms(p, _) | Change::Rm(p) => {
                    p
                }
            };
            t.touched.insert(p.clone());
            t.log.push(c);
        }
        Ok(b"OK\0".to_vec())
    }

    fn lookup(&mut self, tx: u32, p: &str, domid: u32) -> Result<Node, &'static str> {
        if let Some(t) = self.txs.get_mut(&tx) {
            t.touched.insert(p.to_string());
        }
        let n = self.tree_mut(tx)?.get(p).cloned().ok_or("ENOENT")?;
        if can(&n.perms, domid, Access::Read) {
            Ok(n)
        } else {
            Err("EACCES")
        }
    }

    fn handle(&mut self, conn: u64, domid: u32, m: &Msg) -> (Op, Reply) {
        let Some(op) = Op::from_u32(m.ty) else {
            return (Op::Error, Err("EINVAL"));
        };
        let f = split_fields(&m.payload);
        let arg = |i: usize| f.get(i).cloned().unwrap_or_default();
        let path = arg(0);
        let path_ok = valid_path(&path);
        let needs_path = matches!(
            op,
            Op::Read
                | Op::Write
                | Op::Mkdir
                | Op::Rm
                | Op::Directory
                | Op::GetPerms
                | Op::SetPerms
                | Op::Watch
        );
        if needs_path && !path_ok {
            return (op, Err("EINVAL"));
        }
        let privileged = |r: Reply| if domid == 0 { r } else { Err("EACCES") };
        let r = match op {
            Op::Read => self.lookup(m.tx_id, &path, domid).map(|n| n.value),
            Op::Write => {
                let at = m
                    .payload
                    .iter()
                    .position(|&b| b == 0)
                    .map_or(m.payload.len(), |i| i + 1);
                self.change(
                    m.tx_id,
                    Change::Write(path, m.payload[at..].to_vec()),
                    domid,
                )
            }
            Op::Mkdir => self.change(m.tx_id, Change::Mkdir(path), domid),
            Op::Rm => self.change(m.tx_id, Change::Rm(path), domid),
            Op::SetPerms => {
                let perms: Result<Vec<Perm>, _> = f[1..].iter().map(|s| s.parse()).collect();
                match perms {
                    Ok(p) => self.change(m.tx_id, Change::SetPerms(path, p), domid),
                    Err(_) => Err("EINVAL"),
                }
            }
            Op::Directory => self.lookup(m.tx_id, &path, domid).and_then(|_| {
                let tree = self.tree_mut(m.tx_id)?;
                let prefix = if path == "/" {
                    "/".to_string()
                } else {
                    format!("{path}/")
                };
                let kids: Vec<&[u8]> = tree
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .filter(|(k, _)| !k[prefix.len()..].contains('/') && k.len() > prefix.len())
                    .map(|(k, _)| &k.as_bytes()[prefix.len()..])
                    .collect();
                Ok(nul_fields(&kids))
            }),
            Op::GetPerms => self.lookup(m.tx_id, &path, domid).map(|n| {
                let s: Vec<String> = n.perms.iter().map(|p| p.to_string()).collect();
                nul_fields(&s.iter().map(|s| s.as_bytes()).collect::<Vec<_>>())
            }),
            Op::Watch => {
                let token = arg(1);
                self.watches.push((conn, path.clone(), token.clone()));
                // xenstored fires every new watch once; the fake does so after the reply.
                return (op, Ok(b"OK\0".to_vec()));
            }
            Op::Unwatch => {
                let token = arg(1);
                let before = self.watches.len();
                self.watches
                    .retain(|(c, p, t)| !(*c == conn && *p == path && *t == token));
                if self.watches.len() == before {
                    Err("ENOENT")
                } else {
                    Ok(b"OK\0".to_vec())
                }
            }
            Op::TransactionStart => {
                self.next_tx += 1;
                let id = self.next_tx;
                self.txs.insert(
                    id,
                    Tx {
                        tree: self.tree.clone(),
                        base: self.tree.clone(),
                        touched: BTreeSet::new(),
                        log: Vec::new(),
                    },
                );
                Ok(nul_fields(&[id.to_string().as_bytes()]))
            }
            Op::TransactionEnd => match self.txs.remove(&m.tx_id) {
                None => Err("ENOENT"),
                Some(_) if path == "F" => Ok(b"OK\0".to_vec()),
                Some(t) => self.commit(t, domid),
            },
            Op::Introduce => privileged(match arg(0).parse::<u32>() {
                Ok(d) => {
                    self.domains.insert(d);
                    self.fire_special("@introduceDomain");
                    Ok(b"OK\0".to_vec())
                }
                Err(_) => Err("EINVAL"),
            }),
            Op::Release => privileged(match arg(0).parse::<u32>() {
                Ok(d) if self.domains.remove(&d) => {
                    self.fire_special("@releaseDomain");
                    Ok(b"OK\0".to_vec())
                }
                Ok(_) => Err("ENOENT"),
                Err(_) => Err("EINVAL"),
            }),
            Op::IsDomainIntroduced => match arg(0).parse::<u32>() {
                Ok(d) => Ok(if d == 0 || self.domains.contains(&d) {
                    b"T\0"
                } else {
                    b"F\0"
                }
                .to_vec()),
                Err(_) => Err("EINVAL"),
            },
            Op::Resume => privileged(Ok(b"OK\0".to_vec())),
            Op::GetDomainPath => match arg(0).parse::<u32>() {
                Ok(d) => Ok(nul_fields(&[format!("/local/domain/{d}").as_bytes()])),
                Err(_) => Err("EINVAL"),
            },
            _ => Err("ENOSYS"),
        };
        (op, r)
    }

    fn fire_special(&self, name: &str) {
        for (conn, w, token) in &self.watches {
            if w == name {
                self.event(*conn, name, token);
            }
        }
    }

    fn commit(&mut self, t: Tx, domid: u32) -> Reply {
        // Conflict if any node the transaction looked at or changed is no
        // longer what it was when the transaction started.
        for p in &t.touched {
            let now = self.tree.get(p).map(|n| n.gen);
            let then = t.base.get(p).map(|n| n.gen);
            if now != then {
                return Err("EAGAIN");
            }
        }
        for c in &t.log {
            self.gen += 1;
            State::apply(&mut self.tree, self.gen, c, domid)?;
        }
        for c in &t.log {
            match c {
                Change::Write(p, _) | Change::Mkdir(p) | Change::SetPerms(p, _) => {
                    self.fire(p, false)
                }
                Change::Rm(p) => self.fire(p, true),
            }
        }
        Ok(b"OK\0".to_vec())
    }
}

impl FakeXenstored {
    /// An empty store holding `/`, `/local` and `/local/domain` owned by dom0.
    pub fn new() -> Self {
        let mut st = State::default();
        for p in ["/", "/local", "/local/domain"] {
            st.tree.insert(
                p.into(),
                Node {
                    value: Vec::new(),
                    perms: vec![Perm::new(0, Access::None)],
                    gen: 0,
                },
            );
        }
        FakeXenstored {
            st: Arc::new(Mutex::new(st)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A privileged (dom0) client connected to this store.
    pub fn connect(&self) -> Xenstore {
        self.connect_as(0)
    }

    /// A client whose requests are checked as coming from `domid`.
    pub fn connect_as(&self, domid: u32) -> Xenstore {
        let (client, server) = tokio::io::duplex(64 * 1024);
        self.serve(server, domid);
        let (r, w) = tokio::io::split(client);
        Xenstore::from_io(r, w)
    }

    /// Number of watches currently registered (to check UNWATCH on drop).
    pub fn watch_count(&self) -> usize {
        self.lock().watches.len()
    }

    fn serve(&self, io: DuplexStream, domid: u32) {
        let (mut r, mut w) = tokio::io::split(io);
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let conn = {
            let mut st = self.lock();
            st.next_conn += 1;
            let id = st.next_conn;
            st.conns.insert(id, tx.clone());
            id
        };
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = Msg::read(&mut r).await {
                let mut st = me.lock();
                let (op, reply) = st.handle(conn, domid, &m);
                let out = match reply {
                    Ok(p) => Msg::new(op, m.req_id, m.tx_id, p),
                    Err(e) => Msg::new(Op::Error, m.req_id, m.tx_id, nul_fields(&[e.as_bytes()])),
                };
                let _ = tx.send(out.encode());
                if op == Op::Watch {
                    let f = split_fields(&m.payload);
                    if let [p, t, ..] = &f[..] {
                        st.event(conn, p, t);
                    }
                }
            }
            let mut st = me.lock();
            st.conns.remove(&conn);
            st.watches.retain(|(c, _, _)| *c != conn);
        });
    }
}
