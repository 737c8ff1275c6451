//! The RPC core: sessions, dispatch of every message of the definition
//! (generic messages from the generated tables, custom ones from the
//! handler tables of [`session`], [`task`], [`host`] and [`event`]), roles,
//! and tasks for `Async.` calls.
//!
//! A message of the definition with no implementation answers
//! `NOT_IMPLEMENTED [message]` and is left out of `system.listMethods`.

pub mod auth;
pub mod events;
mod generic;
mod sessions;
mod tasks;
pub mod wire;

use crate::db::{Db, DbError};
use crate::generated::errors;
use crate::model::typed::Wire;
use crate::model::value::{coerce, V};
use crate::model::{self, Class, Generic, Message, Msg, Role, Ty};
use crate::rpc::auth::Authenticator;
use crate::rpc::wire::{Call, Outcome};
use crate::xenops::probe::HostProbe;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::model::error::ApiError;
use sessions::SessionState;
pub use sessions::{Subject, MAX_ANONYMOUS_SESSIONS, MAX_SESSIONS_PER_GROUP};
use tasks::start_task;
pub use tasks::{create_task, gc_tasks, prune_task_owners, MAX_PENDING_TASKS, MAX_TASKS};

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match e {
            DbError::NotFound { class, reference } => errors::handle_invalid(&class, &reference),
            e => errors::internal_error(&e.to_string()),
        }
    }
}

pub type R<T> = Result<T, ApiError>;

pub fn void() -> V {
    V::S(String::new())
}

pub fn new_ref() -> String {
    format!("OpaqueRef:{}", uuid::Uuid::new_v4())
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Shared daemon state.
pub struct Ctx {
    pub db: Arc<Db>,
    pub auth: Arc<dyn Authenticator>,
    pub probe: Arc<dyn HostProbe>,
    pub host_ref: String,
    pub pool_ref: String,
    pub session_timeout: Duration,
    /// PEM of the server certificate (for host.get_server_certificate).
    pub certificate_pem: Mutex<String>,
    sessions: Mutex<HashMap<String, SessionState>>,
    /// Task -> the user whose session created it (internal in the
    /// reference too: not in the record).
    task_owners: Mutex<HashMap<String, String>>,
    /// Pause before answering a failed login.
    pub login_failure_delay: Duration,
    /// The custom messages' implementations.
    handlers: Handlers,
    /// The hypervisor side, once connected (on a Xen dom0; never with the
    /// fake host probe). Opaque here: only the VM handlers use it.
    pub xenops: std::sync::OnceLock<Arc<crate::xenops::Xenops<crate::xenops::XenHypervisor>>>,
}

impl Ctx {
    pub fn new(
        db: Arc<Db>,
        auth: Arc<dyn Authenticator>,
        probe: Arc<dyn HostProbe>,
        host_ref: String,
        pool_ref: String,
        session_timeout: Duration,
        handlers: Handlers,
    ) -> Ctx {
        Ctx {
            db,
            auth,
            probe,
            host_ref,
            pool_ref,
            session_timeout,
            certificate_pem: Mutex::new(String::new()),
            sessions: Mutex::new(HashMap::new()),
            task_owners: Mutex::new(HashMap::new()),
            login_failure_delay: Duration::from_secs(5),
            handlers,
            xenops: std::sync::OnceLock::new(),
        }
    }
}

/// The fixture of this crate's unit tests: a bootstrapped database in `dir`
/// remembering `max_tombstones` deletions, the fake host probe, one account
/// root/pw, and the real handler table.
#[cfg(test)]
pub(crate) fn test_ctx(dir: &std::path::Path, max_tombstones: usize) -> Arc<Ctx> {
    let db = Arc::new(Db::open_with(&dir.join("db"), max_tombstones).unwrap());
    let probe: Arc<dyn HostProbe> = Arc::new(crate::xenops::probe::FakeProbe);
    let (pool, host) = crate::api::host::bootstrap::bootstrap(&db, probe.as_ref()).unwrap();
    let auth = Arc::new(crate::rpc::auth::StaticAuth {
        users: vec![("root".into(), "pw".into())],
    });
    Arc::new(Ctx::new(
        db,
        auth,
        probe,
        host,
        pool,
        Duration::from_secs(3600),
        crate::api::handlers(),
    ))
}

fn param_str(v: &V) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_plain())
}

fn get_arg(args: &[V], i: usize, ty: &Ty, name: &str) -> R<V> {
    let v = args
        .get(i)
        .cloned()
        .unwrap_or_else(|| crate::model::value::zero(ty));
    coerce(v, ty).ok_or_else(|| errors::field_type_error(name))
}

// ---------------------------------------------------------------------------
// Handlers

/// One call as a handler sees it: arguments after the session, already
/// coerced to the definition's parameter types (omitted optional ones at
/// their zero value).
pub struct Req {
    pub class: &'static Class,
    pub msg: &'static Message,
    pub session: String,
    pub args: Vec<V>,
}

impl Req {
    /// Argument `i` as a Rust value of its definition type.
    pub fn get<T: Wire + Default>(&self, i: usize) -> T {
        self.args.get(i).and_then(T::from_v).unwrap_or_default()
    }
    /// Argument `i` as a string (references, names).
    pub fn str(&self, i: usize) -> String {
        self.args.get(i).map(param_str).unwrap_or_default()
    }
    /// `class.message`, as in errors.
    pub fn method(&self) -> String {
        format!("{}.{}", self.class.name, self.msg.name)
    }
}

pub type BoxFut = Pin<Box<dyn Future<Output = R<V>> + Send>>;
pub type Handler = fn(Arc<Ctx>, Req) -> BoxFut;

/// How a message of the definition is implemented.
#[derive(Clone, Copy)]
pub enum Impl {
    /// Hand-written.
    Custom(Handler),
    /// By the generic implementation its name implies (for custom messages
    /// of the definition whose generic meaning is all we do yet).
    Generic,
}

/// A handler's answer, when it needs no waiting.
pub fn ready(r: R<V>) -> BoxFut {
    Box::pin(std::future::ready(r))
}

/// The hand-written implementations, by message: given to [`Ctx::new`]
/// by whoever wires the daemon (`crate::api::handlers`), so this core
/// depends on no handler area.
#[derive(Default)]
pub struct Handlers(HashMap<Msg, Impl>);

impl Handlers {
    /// A table from pairs; a message given twice keeps its last handler
    /// (the areas' own test checks that none is).
    pub fn new(pairs: impl IntoIterator<Item = (Msg, Impl)>) -> Handlers {
        Handlers(pairs.into_iter().collect())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What serves a message, or None (NOT_IMPLEMENTED).
    fn implementation(&self, m: &'static Message) -> Option<Impl> {
        match self.0.get(&m.id) {
            Some(i) => Some(*i),
            None if m.implicit && m.generic.is_some() => Some(Impl::Generic),
            // Reads of whole objects are served from the database even where
            // the reference implements them by hand (message.get_all_records).
            None if matches!(
                m.generic,
                Some(
                    Generic::GetRecord
                        | Generic::GetByUuid
                        | Generic::GetAll
                        | Generic::GetAllRecords
                        | Generic::GetByNameLabel
                )
            ) =>
            {
                Some(Impl::Generic)
            }
            None => None,
        }
    }

    /// All method names served, as returned by `system.listMethods`.
    pub fn list_methods(&self) -> Vec<String> {
        let mut out = vec![
            "system.listMethods".to_string(),
            "system.methodHelp".to_string(),
            "system.methodSignature".to_string(),
        ];
        for c in model::CLASSES {
            for m in c
                .messages
                .iter()
                .filter(|m| self.implementation(m).is_some())
            {
                out.push(format!("{}.{}", c.name, m.name));
                if m.asynchronous {
                    out.push(format!("Async.{}.{}", c.name, m.name));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Dispatch

/// Entry point: run one call.
pub async fn dispatch(ctx: &Arc<Ctx>, call: Call) -> Outcome {
    match dispatch_inner(ctx, call).await {
        Ok(v) => Ok(v),
        Err(e) => Err(e.0),
    }
}

enum Target {
    Message(&'static Message),
    /// The reference's hidden `get_all_records_where` / `get_all_where`.
    Where {
        records: bool,
    },
}

fn resolve(method: &str) -> R<(&'static Class, Target, bool)> {
    let unknown = || errors::message_method_unknown(method);
    let (is_async, rest) = match method.strip_prefix("Async.") {
        Some(r) => (true, r),
        None => (false, method),
    };
    let (cname, mname) = rest.split_once('.').ok_or_else(unknown)?;
    let c = model::class(cname).ok_or_else(unknown)?;
    if let Some(m) = c.message(mname) {
        if is_async && !m.asynchronous {
            return Err(unknown());
        }
        return Ok((c, Target::Message(m), is_async));
    }
    let records = match mname {
        "get_all_records_where" => true,
        "get_all_where" => false,
        _ => return Err(unknown()),
    };
    if is_async || !c.expose_get_all {
        return Err(unknown());
    }
    Ok((c, Target::Where { records }, false))
}

async fn dispatch_inner(ctx: &Arc<Ctx>, call: Call) -> R<V> {
    let method = call.method.as_str();
    match method {
        "system.listMethods" => {
            return Ok(V::A(
                ctx.handlers.list_methods().into_iter().map(V::S).collect(),
            ))
        }
        "system.methodHelp" | "system.methodSignature" => return Ok(void()),
        _ => {}
    }
    let (c, target, is_async) = resolve(method)?;
    let n = call.params.len();
    let ((min, max), needs_session) = match &target {
        Target::Message(m) => (m.arity(), m.session),
        Target::Where { .. } => ((2, 2), true),
    };
    if n < min || n > max {
        return Err(errors::message_parameter_count_mismatch(
            method,
            &max.to_string(),
            &n.to_string(),
        ));
    }
    let (session, role) = if needs_session {
        ctx.check_session(call.params.first())?
    } else {
        (String::new(), Role::PoolAdmin)
    };
    let raw = &call.params[usize::from(needs_session)..];
    let m = match target {
        Target::Where { records } => {
            return generic::where_call(ctx, c, records, &param_str(&raw[0]));
        }
        Target::Message(m) => m,
    };
    if needs_session && !m.allows(role) {
        return Err(errors::rbac_permission_denied(
            &format!("{}.{}", c.name, m.name),
            "No permission in the user session",
        ));
    }
    let imp = ctx
        .handlers
        .implementation(m)
        .ok_or_else(|| errors::not_implemented(method))?;
    let mut args = Vec::with_capacity(m.params.len());
    for (i, p) in m.params.iter().enumerate() {
        args.push(get_arg(raw, i, &p.ty, p.name)?);
    }
    let req = Req {
        class: c,
        msg: m,
        session,
        args,
    };
    if is_async {
        return start_task(ctx, imp, req, method);
    }
    run(ctx, imp, req).await
}

async fn run(ctx: &Arc<Ctx>, imp: Impl, req: Req) -> R<V> {
    match imp {
        Impl::Custom(h) => h(ctx.clone(), req).await,
        Impl::Generic => {
            let g = req
                .msg
                .generic
                .ok_or_else(|| errors::not_implemented(&req.method()))?;
            generic::call(ctx, req.class, g, &req.args)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::records::{Task, TaskStatusType};
    use crate::model::typed::{DateTime, Ref};
    use crate::model::value::NULL_REF;

    #[test]
    fn finished_tasks_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let mk = |status: TaskStatusType, finished: DateTime| {
            let r = Ref::<Task>::new(new_ref());
            let t = Task {
                status,
                finished,
                ..Task::default()
            };
            db.create_typed(&r, &t).unwrap();
            r
        };
        let old = mk(
            TaskStatusType::Success,
            DateTime("20200101T00:00:00Z".into()),
        );
        let recent = mk(TaskStatusType::Success, DateTime::now());
        let pending = mk(TaskStatusType::Pending, DateTime::default());
        gc_tasks(&db, Duration::from_secs(3600));
        assert!(db.get_typed(&old).is_none());
        assert!(db.get_typed(&recent).is_some());
        assert!(db.get_typed(&pending).is_some());
    }

    #[tokio::test]
    async fn roles_and_unimplemented_messages() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = test_ctx(dir.path(), crate::db::MAX_TOMBSTONES);
        let pool = ctx.pool_ref.clone();
        let call = |method: &str, params: Vec<V>| Call {
            method: method.into(),
            params,
        };
        let s = dispatch(
            &ctx,
            call(
                "session.login_with_password",
                vec![V::str("root"), V::str("pw")],
            ),
        )
        .await
        .unwrap();
        let sref = s.as_str().unwrap().to_string();
        let set = || {
            call(
                "pool.set_name_label",
                vec![s.clone(), V::str(&pool), V::str("x")],
            )
        };
        dispatch(&ctx, set()).await.unwrap();
        // A read-only session may read but not write.
        ctx.sessions().get_mut(&sref).unwrap().subject.role = Role::ReadOnly;
        let e = dispatch(&ctx, set()).await.unwrap_err();
        assert_eq!(
            e,
            [
                "RBAC_PERMISSION_DENIED",
                "pool.set_name_label",
                "No permission in the user session"
            ]
        );
        let got = dispatch(
            &ctx,
            call("pool.get_name_label", vec![s.clone(), V::str(&pool)]),
        );
        assert_eq!(got.await.unwrap(), V::str("x"));
        ctx.sessions().get_mut(&sref).unwrap().subject.role = Role::PoolAdmin;
        // In the definition, not implemented yet.
        let e = dispatch(
            &ctx,
            call(
                "VM.checkpoint",
                vec![s.clone(), V::str(NULL_REF), V::str("c")],
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(e, ["NOT_IMPLEMENTED", "VM.checkpoint"]);
        // Not in the definition (removed there).
        let e = dispatch(
            &ctx,
            call(
                "host.get_cpu_features",
                vec![s.clone(), V::str(&ctx.host_ref)],
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(e[0], "MESSAGE_METHOD_UNKNOWN");
        // Every class with get_all_records answers, with the definition's fields.
        for c in model::CLASSES.iter().filter(|c| c.expose_get_all) {
            let all = dispatch(
                &ctx,
                call(&format!("{}.get_all_records", c.name), vec![s.clone()]),
            )
            .await
            .unwrap();
            let V::M(all) = all else { panic!("{}", c.name) };
            for rec in all.values() {
                let V::M(rec) = rec else { panic!() };
                let names: Vec<&str> = rec.keys().map(String::as_str).collect();
                let mut want: Vec<&str> = c.fields.iter().map(|f| f.name).collect();
                want.sort();
                assert_eq!(names, want, "{}", c.name);
            }
        }
    }
}
