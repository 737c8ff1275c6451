//! The RPC core: sessions, dispatch of every message of the definition
//! (generic messages from the generated tables, custom ones from the
//! handler tables of [`session`], [`task`], [`host`] and [`event`]), roles,
//! and tasks for `Async.` calls.
//!
//! A message of the definition with no implementation answers
//! `NOT_IMPLEMENTED [message]` and is left out of `system.listMethods`.

mod event;
mod generic;
mod host;
mod session;
mod task;

use crate::auth::Authenticator;
use crate::datamodel::{self, Class, Generic, Message, Msg, Role, Ty};
use crate::db::{Change, Db, DbError};
use crate::generated::errors;
use crate::generated::records::{Task, TaskAllowedOperations, TaskStatusType};
use crate::probe::HostProbe;
use crate::typed::{DateTime, Object, Ref, Wire};
use crate::value::{coerce, now_f64, to_xml_string, V};
use crate::wire::{Call, Outcome};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

pub use crate::error::ApiError;

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match e {
            DbError::NotFound { class, reference } => errors::handle_invalid(&class, &reference),
            e => errors::internal_error(&e.to_string()),
        }
    }
}

pub type R<T> = Result<T, ApiError>;

fn void() -> V {
    V::S(String::new())
}

pub fn new_ref() -> String {
    format!("OpaqueRef:{}", uuid::Uuid::new_v4())
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

struct Registration {
    classes: HashSet<String>,
    last_id: u64,
}

struct SessionState {
    last_active: Instant,
    registration: Option<Registration>,
    subject: Subject,
    originator: String,
}

/// Who a session acts for: what every authority check looks at (roles in
/// the dispatch, task ownership in [`task`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The name it logged in with (`auth_user_name`).
    pub user: String,
    /// Logged in as root, or on the local Unix socket.
    pub local_superuser: bool,
    /// What it may call: pool-admin for the local superuser; other local
    /// accounts (no subject of an external directory here) only read and
    /// handle their own tasks.
    pub role: Role,
}

impl Subject {
    fn new(user: &str, local_superuser: bool) -> Subject {
        Subject {
            user: user.to_string(),
            local_superuser,
            role: if local_superuser {
                Role::PoolAdmin
            } else {
                Role::ReadOnly
            },
        }
    }
}

/// The reference's session limits (`Xapi_globs`): root's sessions are
/// counted per originator, other users' per user name, 500 each; root's
/// sessions with no originator share 400 (`max_sessions`). Beyond a limit
/// the least recently active sessions of the group are destroyed.
pub const MAX_SESSIONS_PER_GROUP: usize = 500;
pub const MAX_ANONYMOUS_SESSIONS: usize = 400;
/// The reference keeps at most 200 tasks (`max_tasks`), deleting the
/// longest-finished completed ones first, never pending ones.
pub const MAX_TASKS: usize = 200;
/// Pending tasks beyond this are refused with TOO_MANY_PENDING_TASKS.
pub const MAX_PENDING_TASKS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SessionGroup {
    Anonymous,
    Originator(String),
    User(String),
}

impl SessionState {
    fn group(&self) -> SessionGroup {
        let root = self.subject.user.is_empty() || self.subject.user == "root";
        match (root, self.originator.is_empty()) {
            (true, true) => SessionGroup::Anonymous,
            (true, false) => SessionGroup::Originator(self.originator.clone()),
            (false, _) => SessionGroup::User(self.subject.user.clone()),
        }
    }
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
}

impl Ctx {
    pub fn new(
        db: Arc<Db>,
        auth: Arc<dyn Authenticator>,
        probe: Arc<dyn HostProbe>,
        host_ref: String,
        pool_ref: String,
        session_timeout: Duration,
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
        }
    }

    /// Who a live session acts for.
    pub fn session_subject(&self, session: &str) -> Option<Subject> {
        self.sessions().get(session).map(|st| st.subject.clone())
    }

    fn task_owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.task_owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Destroys the least recently active sessions of `group` beyond its limit.
    fn enforce_session_limit(&self, group: &SessionGroup) {
        let limit = match group {
            SessionGroup::Anonymous => MAX_ANONYMOUS_SESSIONS,
            _ => MAX_SESSIONS_PER_GROUP,
        };
        let evicted: Vec<String> = {
            let mut s = self.sessions();
            let mut members: Vec<(Instant, String)> = s
                .iter()
                .filter(|(_, st)| &st.group() == group)
                .map(|(r, st)| (st.last_active, r.clone()))
                .collect();
            if members.len() <= limit {
                return;
            }
            members.sort();
            let n = members.len() - limit;
            let out: Vec<String> = members.into_iter().take(n).map(|(_, r)| r).collect();
            for r in &out {
                s.remove(r);
            }
            out
        };
        for r in evicted {
            tracing::info!("session {r} destroyed: more than {limit} sessions in {group:?}");
            let _ = self.db.delete("session", &r);
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionState>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validate a session reference and mark it active; its role.
    fn check_session(&self, v: Option<&V>) -> R<(String, Role)> {
        let r = v.and_then(V::as_str).unwrap_or("").to_string();
        let mut s = self.sessions();
        let role = match s.get_mut(&r) {
            Some(st) if st.last_active.elapsed() <= self.session_timeout => {
                st.last_active = Instant::now();
                Some(st.subject.role)
            }
            _ => None,
        };
        let Some(role) = role else {
            if s.remove(&r).is_some() {
                drop(s);
                let _ = self.db.delete("session", &r);
            }
            return Err(errors::session_invalid(&r));
        };
        Ok((r, role))
    }

    fn session_alive(&self, r: &str) -> bool {
        self.sessions().contains_key(r)
    }

    /// Drop sessions idle for longer than the timeout.
    pub fn reap_sessions(&self) {
        let expired: Vec<String> = {
            let mut s = self.sessions();
            let dead: Vec<String> = s
                .iter()
                .filter(|(_, st)| st.last_active.elapsed() > self.session_timeout)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &dead {
                s.remove(k);
            }
            dead
        };
        for r in expired {
            tracing::info!("session {r} expired");
            let _ = self.db.delete("session", &r);
        }
    }
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
        .unwrap_or_else(|| crate::value::zero(ty));
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

/// The hand-written implementations, by message.
static HANDLERS: LazyLock<HashMap<Msg, Impl>> = LazyLock::new(|| {
    [
        session::HANDLERS,
        task::HANDLERS,
        host::HANDLERS,
        event::HANDLERS,
    ]
    .into_iter()
    .flatten()
    .map(|(m, i)| (*m, *i))
    .collect()
});

/// What serves a message, or None (NOT_IMPLEMENTED).
fn implementation(m: &'static Message) -> Option<Impl> {
    match HANDLERS.get(&m.id) {
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
pub fn list_methods() -> Vec<String> {
    let mut out = vec![
        "system.listMethods".to_string(),
        "system.methodHelp".to_string(),
        "system.methodSignature".to_string(),
    ];
    for c in datamodel::CLASSES {
        for m in c.messages.iter().filter(|m| implementation(m).is_some()) {
            out.push(format!("{}.{}", c.name, m.name));
            if m.asynchronous {
                out.push(format!("Async.{}.{}", c.name, m.name));
            }
        }
    }
    out
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
    let c = datamodel::class(cname).ok_or_else(unknown)?;
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
        "system.listMethods" => return Ok(V::A(list_methods().into_iter().map(V::S).collect())),
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
    let imp = implementation(m).ok_or_else(|| errors::not_implemented(method))?;
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

// ---------------------------------------------------------------------------
// Tasks

/// A new pending task owned by `session`'s user; refused beyond
/// [`MAX_PENDING_TASKS`].
pub fn create_task(ctx: &Ctx, label: &str, description: &str, session: &str) -> R<Ref<Task>> {
    let pending = ctx
        .db
        .all_typed::<Task>()
        .into_iter()
        .filter(|(_, t)| is_pending(t))
        .count();
    if pending >= MAX_PENDING_TASKS {
        return Err(errors::too_many_pending_tasks());
    }
    let r = Ref::new(new_ref());
    let t = Task {
        uuid: new_uuid(),
        name_label: label.into(),
        name_description: description.into(),
        allowed_operations: vec![TaskAllowedOperations::Cancel],
        created: DateTime::now(),
        status: TaskStatusType::Pending,
        resident_on: Ref::new(ctx.host_ref.clone()),
        ..Task::default()
    };
    ctx.db.create_typed(&r, &t)?;
    if let Some(s) = ctx.session_subject(session) {
        ctx.task_owners().insert(r.as_str().to_string(), s.user);
    }
    Ok(r)
}

fn is_pending(t: &Task) -> bool {
    matches!(
        t.status,
        TaskStatusType::Pending | TaskStatusType::Cancelling
    )
}

/// Forgets the owners of tasks that are gone.
pub fn prune_task_owners(ctx: &Ctx) {
    let live: HashSet<String> = ctx.db.refs(Task::CLASS).into_iter().collect();
    ctx.task_owners().retain(|t, _| live.contains(t));
}

/// Destroy tasks that finished longer than `retention` ago. Compact
/// datetimes order as strings, so no parsing is needed.
pub fn gc_tasks(db: &Db, retention: Duration) {
    let cutoff = DateTime(crate::value::datetime_from_unix(
        crate::value::now_unix() - retention.as_secs() as i64,
    ));
    for (r, t) in db.all_typed::<Task>() {
        if !is_pending(&t) && t.finished < cutoff && t.finished != DateTime::default() {
            let _ = db.delete(Task::CLASS, r.as_str());
        }
    }
    // Beyond MAX_TASKS, completed tasks go, longest finished first.
    let all = db.all_typed::<Task>();
    if all.len() <= MAX_TASKS {
        return;
    }
    let (pending, mut completed): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|(_, t)| is_pending(t));
    let keep = MAX_TASKS.saturating_sub(pending.len());
    completed.sort_by(|(_, a), (_, b)| b.finished.cmp(&a.finished));
    for (r, _) in completed.into_iter().skip(keep) {
        let _ = db.delete(Task::CLASS, r.as_str());
    }
}

fn finish_task(ctx: &Ctx, task: &Ref<Task>, res: R<Option<V>>) {
    let _ = ctx.db.update_typed(task, |t| {
        t.finished = DateTime::now();
        t.progress = 1.0;
        t.allowed_operations = vec![];
        if t.status == TaskStatusType::Cancelling {
            t.status = TaskStatusType::Cancelled;
            t.error_info = errors::task_cancelled(task.as_str()).0;
            return;
        }
        match res {
            Ok(v) => {
                t.status = TaskStatusType::Success;
                t.result = v.map(|v| to_xml_string(&v)).unwrap_or_default();
            }
            Err(e) => {
                t.status = TaskStatusType::Failure;
                t.error_info = e.0;
            }
        }
    });
}

fn start_task(ctx: &Arc<Ctx>, imp: Impl, req: Req, method: &str) -> R<V> {
    let task = create_task(ctx, method, "", &req.session)?;
    let ctx2 = ctx.clone();
    let t2 = task.clone();
    let has_result = req.msg.result.is_some();
    tokio::spawn(async move {
        let res = run(&ctx2, imp, req).await;
        let res = res.map(|v| if has_result { Some(v) } else { None });
        finish_task(&ctx2, &t2, res);
    });
    Ok(task.to_v())
}

// Helpers used by the event module.

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
    use crate::value::NULL_REF;

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
        let db = Arc::new(Db::open(&dir.path().join("db")).unwrap());
        let probe: Arc<dyn HostProbe> = Arc::new(crate::probe::FakeProbe);
        let (pool, host) = crate::objects::bootstrap(&db, probe.as_ref()).unwrap();
        let auth = Arc::new(crate::auth::StaticAuth {
            users: vec![("root".into(), "pw".into())],
        });
        let ctx = Arc::new(Ctx::new(
            db,
            auth,
            probe,
            host,
            pool.clone(),
            Duration::from_secs(60),
        ));
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
                "VM.start",
                vec![s.clone(), V::str(NULL_REF), V::B(false), V::B(false)],
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(e, ["NOT_IMPLEMENTED", "VM.start"]);
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
        for c in datamodel::CLASSES.iter().filter(|c| c.expose_get_all) {
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

    #[test]
    fn handlers_are_registered_once_and_listed() {
        let n: usize = [
            session::HANDLERS,
            task::HANDLERS,
            host::HANDLERS,
            event::HANDLERS,
        ]
        .iter()
        .map(|t| t.len())
        .sum();
        assert_eq!(n, HANDLERS.len(), "a message has two handlers");
        let l = list_methods();
        for m in [
            "session.login_with_password",
            "host_cpu.get_all_records",
            "host.get_servertime",
            "Async.host.get_server_certificate",
            "event.from",
            "task.set_other_config",
            "VM.get_all_records",
        ] {
            assert!(l.iter().any(|x| x == m), "{m} not listed");
        }
        // Custom messages nobody implements yet are not listed.
        assert!(!l.iter().any(|x| x == "VM.start"));
        assert!(!l.iter().any(|x| x == "session.get_all_records"));
        assert!(!l.iter().any(|x| x.ends_with(".get_all_records_where")));
        // Reads have no Async variant (npm xen-api would take "Async" for a class).
        assert!(!l
            .iter()
            .any(|x| x.starts_with("Async.") && x.ends_with(".get_all_records")));
    }
}
