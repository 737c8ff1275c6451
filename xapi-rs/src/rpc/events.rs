//! `event.*`: `from` (token based), `inject`, `get_current_id` and the
//! legacy `register`/`next`/`unregister`.
//!
//! Tokens are `"%020d,%020d"` (object generation, message generation) as in
//! the reference, so they order correctly as strings; `""` means "from the
//! beginning". `event.inject` returns, as the reference does
//! (`xapi_event.ml`: the token is the generation the injection consumed,
//! minus one), the token just before the injected change, so an
//! `event.from` with it reports that change (which is what a client waits
//! for); the token that `event.from` returns is past it.
//!
//! A wake-up reads the database's change index from the token on (its cost
//! is the changes since, not the objects). A token older than a deletion the
//! database no longer remembers gets `EVENTS_LOST` rather than a reply that
//! silently misses that deletion; the client then starts again from `""`.

use super::sessions::Registration;
use super::{ApiError, Ctx};
use crate::db::Change;
use crate::generated::errors;
use crate::model::value::now_f64;
use crate::model::value::V;
use crate::model::CLASSES;
use std::collections::BTreeMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// After a wake-up, further changes are waited for while they keep coming
/// at most QUIET apart, for at most BATCH in all.
const BATCH: Duration = Duration::from_millis(50);
const QUIET: Duration = Duration::from_millis(2);

/// Waits until changes stop arriving (QUIET without one) or BATCH passes.
async fn settle(rx: &mut tokio::sync::watch::Receiver<u64>) {
    let end = tokio::time::Instant::now() + BATCH;
    while tokio::time::Instant::now() < end {
        match tokio::time::timeout(QUIET, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => break,
        }
    }
}

pub fn token(gen: u64) -> String {
    format!("{gen:020},{:020}", 0)
}

pub fn parse_token(t: &str) -> Option<u64> {
    let t = t.trim();
    if t.is_empty() {
        return Some(0);
    }
    t.split(',').next()?.trim().parse().ok()
}

/// Subscription filter built from `classes` (`*`, `class`, `class/ref`).
struct Filter {
    all: bool,
    classes: Vec<String>,
    objects: Vec<(String, String)>,
}

impl Filter {
    fn new(classes: &[String]) -> Filter {
        let mut f = Filter {
            all: false,
            classes: vec![],
            objects: vec![],
        };
        for c in classes {
            if c == "*" {
                f.all = true;
            } else if let Some((cl, r)) = c.split_once('/') {
                f.objects.push((cl.to_lowercase(), r.to_string()));
            } else {
                f.classes.push(c.to_lowercase());
            }
        }
        f
    }
    fn wants(&self, class: &str, r: &str) -> bool {
        if !crate::model::class(class).is_some_and(|c| c.gen_events) {
            return false;
        }
        let lc = class.to_lowercase();
        self.all
            || self.classes.contains(&lc)
            || self.objects.iter().any(|(c, o)| *c == lc && o == r)
    }
    /// As in the reference, the counts cover every table, subscribed or not.
    fn counted_classes(&self) -> Vec<&'static str> {
        CLASSES
            .iter()
            .filter(|c| c.in_db && c.gen_events)
            .map(|c| c.name)
            .collect()
    }
}

pub fn get_current_id(ctx: &Ctx) -> V {
    V::I(ctx.db.generation() as i64)
}

pub fn inject(ctx: &Ctx, class: &str, r: &str) -> Result<V, ApiError> {
    let cls = crate::model::class(class)
        .filter(|c| c.in_db)
        .ok_or_else(|| errors::handle_invalid(class, r))?;
    let gen = ctx.db.touch(cls.name, r)?;
    Ok(V::S(token(gen.saturating_sub(1))))
}

pub fn register(ctx: &Ctx, session: &str, classes: &[String], add: bool) -> V {
    ctx.register(session, classes, add);
    V::S(String::new())
}

pub async fn from_token(
    ctx: &Arc<Ctx>,
    session: &str,
    classes: &[String],
    tok: &str,
    timeout: f64,
) -> Result<V, ApiError> {
    let since = parse_token(tok).ok_or_else(|| errors::event_from_token_parse_failure(tok))?;
    from(ctx, session, classes, since, timeout).await
}

async fn from(
    ctx: &Arc<Ctx>,
    session: &str,
    classes: &[String],
    since: u64,
    timeout: f64,
) -> Result<V, ApiError> {
    let filter = Filter::new(classes);
    let timeout = if timeout.is_finite() && timeout > 0.0 {
        Duration::from_secs_f64(timeout.min(86400.0))
    } else {
        Duration::ZERO
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = ctx.db.subscribe();
    let lost = || {
        if ctx.db.deletions_lost(since) {
            Err(errors::events_lost())
        } else {
            Ok(())
        }
    };
    lost()?;
    let mut woken = false;
    let (changes, gen) = loop {
        rx.borrow_and_update();
        let (ch, gen) = ctx.db.changes_since(since, |c, r| filter.wants(c, r));
        if !ch.is_empty() {
            if !woken {
                // Already there when asked: no reason to wait.
                break (ch, gen);
            }
            // Woken by a change: take those that follow it closely in the
            // same answer (a VM start is several writes), without making a
            // lone change wait.
            settle(&mut rx).await;
            break ctx.db.changes_since(since, |c, r| filter.wants(c, r));
        }
        if tokio::time::Instant::now() >= deadline || !ctx.is_alive(session) {
            break (ch, gen);
        }
        // Wake on a change, the deadline, or periodically to notice logout.
        let wait = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(Duration::from_secs(5));
        woken = matches!(tokio::time::timeout(wait, rx.changed()).await, Ok(Ok(())));
    };
    if !ctx.is_alive(session) {
        return Err(errors::session_invalid(session));
    }
    // Deletions forgotten while we waited would be missing from `changes`.
    lost()?;
    let mut counts = BTreeMap::new();
    for c in filter.counted_classes() {
        counts.insert(c.to_lowercase(), V::I32(ctx.db.count(c) as i32));
    }
    let mut out = BTreeMap::new();
    out.insert(
        "events".to_string(),
        V::A(changes.iter().map(|c| event_record(c, false)).collect()),
    );
    out.insert("valid_ref_counts".to_string(), V::M(counts));
    out.insert("token".to_string(), V::S(token(gen)));
    Ok(V::M(out))
}

pub async fn next(ctx: &Arc<Ctx>, session: &str) -> Result<V, ApiError> {
    let mut rx = ctx.db.subscribe();
    loop {
        rx.borrow_and_update();
        let Some((classes, last)) = ctx.registration(session) else {
            return Err(errors::session_not_registered(session));
        };
        if ctx.db.deletions_lost(last) {
            ctx.set_last_id(session, ctx.db.generation());
            return Err(errors::events_lost());
        }
        let list: Vec<String> = classes.into_iter().collect();
        let filter = Filter::new(&list);
        let (ch, _) = ctx.db.changes_since(last, |c, r| filter.wants(c, r));
        if let Some(max) = ch.iter().map(|c| c.gen).max() {
            ctx.set_last_id(session, max);
            return Ok(V::A(ch.iter().map(|c| event_record(c, true)).collect()));
        }
        if !ctx.is_alive(session) {
            return Err(errors::session_invalid(session));
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
    }
}

// Sessions' event registrations.

impl Ctx {
    pub(crate) fn register(&self, session: &str, classes: &[String], add: bool) {
        let current = self.db.generation();
        let mut s = self.sessions();
        if let Some(st) = s.get_mut(session) {
            let reg = st.registration.get_or_insert_with(|| Registration {
                classes: HashSet::new(),
                last_id: current,
            });
            for c in classes {
                if add {
                    reg.classes.insert(c.to_lowercase());
                } else {
                    reg.classes.remove(&c.to_lowercase());
                }
            }
        }
    }

    /// Registered classes and last delivered id, or None if not registered.
    pub(crate) fn registration(&self, session: &str) -> Option<(HashSet<String>, u64)> {
        self.sessions()
            .get(session)
            .and_then(|st| st.registration.as_ref())
            .map(|r| (r.classes.clone(), r.last_id))
    }

    pub(crate) fn set_last_id(&self, session: &str, id: u64) {
        if let Some(r) = self
            .sessions()
            .get_mut(session)
            .and_then(|st| st.registration.as_mut())
        {
            r.last_id = id;
        }
    }

    pub(crate) fn is_alive(&self, session: &str) -> bool {
        self.session_alive(session)
    }
}

/// Event record as returned by `event.next` / inside `event.from`.
pub fn event_record(ch: &Change, with_uuid: bool) -> V {
    let mut m = BTreeMap::new();
    // As in the reference, id and timestamp are strings.
    m.insert("id".to_string(), V::S(ch.gen.to_string()));
    m.insert("timestamp".to_string(), V::S(format!("{:.6}", now_f64())));
    m.insert("class".to_string(), V::S(ch.class.to_lowercase()));
    m.insert("operation".to_string(), V::str(ch.operation));
    m.insert("ref".to_string(), V::S(ch.reference.clone()));
    if with_uuid {
        let uuid = ch
            .snapshot
            .as_ref()
            .and_then(|s| s.get("uuid"))
            .and_then(V::as_str)
            .unwrap_or("");
        m.insert("obj_uuid".to_string(), V::str(uuid));
    }
    if let Some(s) = &ch.snapshot {
        m.insert("snapshot".to_string(), V::M(s.clone()));
    }
    V::M(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::wire::Call;
    use crate::rpc::{dispatch, Ctx};
    use serde_json::json;

    #[test]
    fn tokens_order_as_strings() {
        assert!(token(9) < token(10));
        assert_eq!(parse_token(&token(42)), Some(42));
        assert_eq!(parse_token(""), Some(0));
        assert_eq!(parse_token("x"), None);
    }

    struct T {
        ctx: Arc<Ctx>,
        session: String,
        _dir: tempfile::TempDir,
    }

    impl T {
        async fn new(max_tombstones: usize) -> T {
            let dir = tempfile::tempdir().unwrap();
            let ctx = crate::rpc::test_ctx(dir.path(), max_tombstones);
            let mut t = T {
                ctx,
                session: String::new(),
                _dir: dir,
            };
            t.session = t
                .call(
                    "session.login_with_password",
                    json!(["root", "pw", "1.0", "t"]),
                )
                .await
                .unwrap()
                .as_str()
                .unwrap()
                .to_string();
            t
        }

        async fn call(&self, method: &str, params: serde_json::Value) -> Result<V, Vec<String>> {
            let mut params: Vec<V> = params
                .as_array()
                .unwrap()
                .iter()
                .map(|p| match p {
                    serde_json::Value::String(s) => V::S(s.clone()),
                    serde_json::Value::Number(n) => V::F(n.as_f64().unwrap()),
                    serde_json::Value::Array(a) => V::A(
                        a.iter()
                            .map(|x| V::S(x.as_str().unwrap().to_string()))
                            .collect(),
                    ),
                    other => panic!("unsupported test parameter {other}"),
                })
                .collect();
            if !method.starts_with("session.login") {
                params.insert(0, V::S(self.session.clone()));
            }
            let call = Call {
                method: method.to_string(),
                params,
            };
            dispatch(&self.ctx, call).await
        }

        /// event.from on `classes` from `tok` (no waiting): (events as
        /// (class, operation, ref), new token).
        async fn from(
            &self,
            classes: &[&str],
            tok: &str,
        ) -> (Vec<(String, String, String)>, String) {
            let r = self
                .call("event.from", json!([classes, tok, 0.0]))
                .await
                .unwrap();
            let V::M(m) = r else { panic!("{r:?}") };
            let V::A(evs) = &m["events"] else { panic!() };
            let evs = evs
                .iter()
                .map(|e| {
                    let V::M(e) = e else { panic!() };
                    let s = |k: &str| e[k].as_str().unwrap().to_string();
                    (s("class"), s("operation"), s("ref"))
                })
                .collect();
            (evs, m["token"].as_str().unwrap().to_string())
        }
    }

    /// The reference's inject: its token precedes the injected event, so
    /// event.from with it (or with any earlier token) reports it, and the
    /// token event.from returns does not report it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inject_token() {
        let t = T::new(100).await;
        let pool = t.ctx.pool_ref.clone();
        let (_, before) = t.from(&["pool"], "").await;
        let tok = t.call("event.inject", json!(["pool", pool])).await.unwrap();
        let tok = tok.as_str().unwrap().to_string();
        assert!(tok.as_str() >= before.as_str());
        let want = vec![("pool".to_string(), "mod".to_string(), pool.clone())];
        let (evs, after) = t.from(&["pool"], &tok).await;
        assert_eq!(evs, want);
        let (evs, _) = t.from(&["pool"], &before).await;
        assert_eq!(evs, want);
        let (evs, _) = t.from(&["pool"], &after).await;
        assert_eq!(evs, vec![]);
        assert_eq!(
            t.call("event.inject", json!(["pool", "OpaqueRef:nope"]))
                .await
                .unwrap_err()[0],
            "HANDLE_INVALID"
        );
    }

    /// event.from never drops a deletion silently: a client gets them all,
    /// or EVENTS_LOST once the database has forgotten one it needed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn from_reports_deletions_or_events_lost() {
        let t = T::new(3).await;
        let mut made = vec![];
        for i in 0..5 {
            let r = t
                .call("task.create", json!([format!("t{i}"), ""]))
                .await
                .unwrap();
            made.push(r.as_str().unwrap().to_string());
        }
        let (_, old) = t.from(&["task"], "").await;
        for r in &made[..2] {
            t.call("task.destroy", json!([r])).await.unwrap();
        }
        let (evs, mid) = t.from(&["task"], &old).await;
        let dels: Vec<_> = evs.iter().map(|e| (e.1.as_str(), e.2.as_str())).collect();
        assert_eq!(dels, [("del", made[0].as_str()), ("del", made[1].as_str())]);
        for r in &made[2..] {
            t.call("task.destroy", json!([r])).await.unwrap();
        }
        // Three deletions remembered: `mid` gets them, `old` needed five.
        let (evs, _) = t.from(&["task"], &mid).await;
        assert_eq!(evs.len(), 3);
        let e = t
            .call("event.from", json!([["task"], old, 0.0]))
            .await
            .unwrap_err();
        assert_eq!(e, ["EVENTS_LOST"]);
        // Starting again from scratch works.
        let (evs, _) = t.from(&["task"], "").await;
        assert_eq!(evs, vec![]);
    }
}
