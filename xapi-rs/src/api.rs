//! Method dispatch: generic per-class messages derived from the datamodel,
//! plus the hand-written messages of session, event, task and host.

use crate::auth::Authenticator;
use crate::datamodel::{self, generic, Class, Generic, Message, Ty};
use crate::db::{Change, Db, DbError};
use crate::probe::HostProbe;
use crate::value::{coerce, now_datetime, now_f64, to_xml_string, Record, NULL_REF, V};
use crate::wire::{Call, Outcome};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An API failure: `[CODE, params...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(pub Vec<String>);

impl ApiError {
    pub fn new(code: &str, params: &[&str]) -> ApiError {
        let mut v = vec![code.to_string()];
        v.extend(params.iter().map(|s| s.to_string()));
        ApiError(v)
    }
    pub fn code(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match e {
            DbError::NotFound { class, reference } => {
                ApiError::new("HANDLE_INVALID", &[&class, &reference])
            }
            e => ApiError::new("INTERNAL_ERROR", &[&e.to_string()]),
        }
    }
}

type R<T> = Result<T, ApiError>;

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

/// Who a session acts for: what authority checks (task ownership here,
/// roles in the dispatch) look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The name it logged in with (`auth_user_name`).
    pub user: String,
    /// Logged in as root, or on the local Unix socket.
    pub local_superuser: bool,
    /// Its role (lower-case reference name): `pool-admin` for the local
    /// superuser; none for other local accounts.
    pub role: Option<&'static str>,
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
    /// Task -> the subject whose session created it.
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

    /// The reference's `assert_op_valid`: a subject may change its own
    /// tasks; anyone else's needs `task.destroy/any` (pool-admin and
    /// pool-operator).
    fn assert_task_op(&self, session: &str, task: &str) -> R<()> {
        let me = self.session_subject(session);
        let owner = self.task_owners().get(task).cloned();
        let own = matches!((&me, &owner), (Some(me), Some(o)) if &me.user == o);
        let privileged = me
            .as_ref()
            .and_then(|s| s.role)
            .is_some_and(|r| matches!(r, "pool-admin" | "pool-operator"));
        if own || privileged {
            return Ok(());
        }
        Err(ApiError::new(
            "RBAC_PERMISSION_DENIED",
            &[
                "task.destroy/any",
                "No permission in user session. (Roles with this permission: pool-admin, pool-operator)",
            ],
        ))
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

    /// Validate a session reference and mark it active.
    fn check_session(&self, v: Option<&V>) -> R<String> {
        let r = v.and_then(V::as_str).unwrap_or("").to_string();
        let mut s = self.sessions();
        let ok = match s.get_mut(&r) {
            Some(st) if st.last_active.elapsed() <= self.session_timeout => {
                st.last_active = Instant::now();
                true
            }
            _ => false,
        };
        if !ok {
            if s.remove(&r).is_some() {
                drop(s);
                let _ = self.db.delete("session", &r);
            }
            return Err(ApiError::new("SESSION_INVALID", &[&r]));
        }
        Ok(r)
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
    coerce(v.clone(), ty).ok_or_else(|| ApiError::new("FIELD_TYPE_ERROR", &[name]))
}

/// Entry point: run one call.
pub async fn dispatch(ctx: &Arc<Ctx>, call: Call) -> Outcome {
    match dispatch_inner(ctx, call).await {
        Ok(v) => Ok(v),
        Err(e) => Err(e.0),
    }
}

enum Target {
    Custom(&'static Message),
    Generic(Generic),
}

fn resolve(method: &str) -> R<(&'static Class, Target, bool)> {
    let unknown = || ApiError::new("MESSAGE_METHOD_UNKNOWN", &[method]);
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
        return Ok((c, Target::Custom(m), is_async));
    }
    if is_async {
        return Err(unknown());
    }
    let g = generic(c, mname).ok_or_else(unknown)?;
    Ok((c, Target::Generic(g), false))
}

fn generic_arity(c: &Class, g: Generic) -> usize {
    match g {
        Generic::AddTo(f) => match c.field(f).map(|f| f.ty) {
            Some(Ty::Map(..)) => 4,
            _ => 3,
        },
        g => g.arity(),
    }
}

async fn dispatch_inner(ctx: &Arc<Ctx>, call: Call) -> R<V> {
    let method = call.method.as_str();
    match method {
        "system.listMethods" => {
            return Ok(V::A(
                datamodel::list_methods().into_iter().map(V::S).collect(),
            ))
        }
        "system.methodHelp" | "system.methodSignature" => return Ok(void()),
        _ => {}
    }
    let (c, target, is_async) = resolve(method)?;
    let n = call.params.len();
    let (min, max) = match &target {
        Target::Custom(m) => {
            let total = m.params.len() + usize::from(m.session);
            (total - m.optional, total)
        }
        Target::Generic(g) => {
            let a = generic_arity(c, *g);
            (a, a)
        }
    };
    if n < min || n > max {
        return Err(ApiError::new(
            "MESSAGE_PARAMETER_COUNT_MISMATCH",
            &[method, &max.to_string(), &n.to_string()],
        ));
    }
    let needs_session = match &target {
        Target::Custom(m) => m.session,
        Target::Generic(_) => true,
    };
    let session = if needs_session {
        ctx.check_session(call.params.first())?
    } else {
        String::new()
    };
    let args: Vec<V> = if needs_session {
        call.params[1..].to_vec()
    } else {
        call.params.clone()
    };
    if is_async {
        let Target::Custom(m) = target else {
            return Err(ApiError::new("MESSAGE_METHOD_UNKNOWN", &[method]));
        };
        return start_task(ctx, c, m, session, args, method);
    }
    match target {
        Target::Generic(g) => generic_call(ctx, c, g, &args),
        Target::Custom(m) => custom_call(ctx, c, m, &session, args).await,
    }
}

// ---------------------------------------------------------------------------
// Tasks

pub fn create_task(ctx: &Ctx, label: &str, description: &str, session: &str) -> R<String> {
    let r = new_ref();
    let mut rec = Record::new();
    rec.insert("uuid".into(), V::S(new_uuid()));
    rec.insert("name_label".into(), V::str(label));
    rec.insert("name_description".into(), V::str(description));
    rec.insert("allowed_operations".into(), V::A(vec![V::str("cancel")]));
    rec.insert("created".into(), now_datetime());
    rec.insert("status".into(), V::str("pending"));
    rec.insert("resident_on".into(), V::S(ctx.host_ref.clone()));
    let pending = ctx
        .db
        .all("task")
        .into_iter()
        .filter(|(_, t)| {
            matches!(
                t.get("status").and_then(V::as_str),
                Some("pending") | Some("cancelling")
            )
        })
        .count();
    if pending >= MAX_PENDING_TASKS {
        return Err(ApiError::new("TOO_MANY_PENDING_TASKS", &[]));
    }
    ctx.db.create("task", &r, rec)?;
    // The owner is not exposed in the record (internal in the reference).
    if let Some(s) = ctx.session_subject(session) {
        ctx.task_owners().insert(r.clone(), s.user);
    }
    Ok(r)
}

/// Forgets the owners of tasks that are gone.
pub fn prune_task_owners(ctx: &Ctx) {
    let live: HashSet<String> = ctx.db.refs("task").into_iter().collect();
    ctx.task_owners().retain(|t, _| live.contains(t));
}

/// Destroy tasks that finished longer than `retention` ago. Compact
/// datetimes order as strings, so no parsing is needed.
pub fn gc_tasks(db: &Db, retention: Duration) {
    let cutoff =
        crate::value::datetime_from_unix(crate::value::now_unix() - retention.as_secs() as i64);
    for (r, rec) in db.all("task") {
        let done = !matches!(
            rec.get("status").and_then(V::as_str),
            Some("pending") | Some("cancelling")
        );
        let finished = rec.get("finished").and_then(V::as_str).unwrap_or("");
        if done && finished < cutoff.as_str() && finished != "19700101T00:00:00Z" {
            let _ = db.delete("task", &r);
        }
    }
    // Beyond MAX_TASKS, completed tasks go, longest finished first.
    let all = db.all("task");
    if all.len() <= MAX_TASKS {
        return;
    }
    let (pending, mut completed): (Vec<_>, Vec<_>) = all.into_iter().partition(|(_, t)| {
        matches!(
            t.get("status").and_then(V::as_str),
            Some("pending") | Some("cancelling")
        )
    });
    let keep = MAX_TASKS.saturating_sub(pending.len());
    completed.sort_by(|(_, a), (_, b)| {
        let f = |t: &Record| {
            t.get("finished")
                .and_then(V::as_str)
                .unwrap_or("")
                .to_string()
        };
        f(b).cmp(&f(a))
    });
    for (r, _) in completed.into_iter().skip(keep) {
        let _ = db.delete("task", &r);
    }
}

fn finish_task(ctx: &Ctx, task: &str, res: R<Option<V>>) {
    let _ = ctx.db.update("task", task, |rec| {
        let cancelling = rec.get("status").and_then(V::as_str) == Some("cancelling");
        rec.insert("finished".into(), now_datetime());
        rec.insert("progress".into(), V::F(1.0));
        rec.insert("allowed_operations".into(), V::A(vec![]));
        if cancelling {
            rec.insert("status".into(), V::str("cancelled"));
            rec.insert(
                "error_info".into(),
                V::A(vec![V::str("TASK_CANCELLED"), V::str(task)]),
            );
            return;
        }
        match res {
            Ok(v) => {
                rec.insert("status".into(), V::str("success"));
                rec.insert(
                    "result".into(),
                    V::S(v.map(|v| to_xml_string(&v)).unwrap_or_default()),
                );
            }
            Err(e) => {
                rec.insert("status".into(), V::str("failure"));
                rec.insert(
                    "error_info".into(),
                    V::A(e.0.into_iter().map(V::S).collect()),
                );
            }
        }
    });
}

fn start_task(
    ctx: &Arc<Ctx>,
    c: &'static Class,
    m: &'static Message,
    session: String,
    args: Vec<V>,
    method: &str,
) -> R<V> {
    let task = create_task(ctx, method, "", &session)?;
    let ctx2 = ctx.clone();
    let t2 = task.clone();
    tokio::spawn(async move {
        let res = custom_call(&ctx2, c, m, &session, args).await;
        let res = res.map(|v| if m.result.is_some() { Some(v) } else { None });
        finish_task(&ctx2, &t2, res);
    });
    Ok(V::S(task))
}

// ---------------------------------------------------------------------------
// Generic messages

fn require(ctx: &Ctx, c: &Class, r: &str) -> R<Record> {
    ctx.db
        .get(c.name, r)
        .ok_or_else(|| ApiError::new("HANDLE_INVALID", &[c.name, r]))
}

fn generic_call(ctx: &Ctx, c: &'static Class, g: Generic, args: &[V]) -> R<V> {
    let arg = |i: usize| args.get(i).map(param_str).unwrap_or_default();
    match g {
        Generic::GetRecord => Ok(V::M(require(ctx, c, &arg(0))?)),
        Generic::GetByUuid => {
            let u = arg(0);
            ctx.db
                .find_by_field(c.name, "uuid", &u)
                .into_iter()
                .next()
                .map(V::S)
                .ok_or_else(|| ApiError::new("UUID_INVALID", &[c.name, &u]))
        }
        Generic::GetAll => Ok(V::A(ctx.db.refs(c.name).into_iter().map(V::S).collect())),
        Generic::GetAllRecords => Ok(V::M(
            ctx.db
                .all(c.name)
                .into_iter()
                .map(|(r, rec)| (r, V::M(rec)))
                .collect(),
        )),
        Generic::GetAllRecordsWhere => {
            let expr = crate::expr::parse(&arg(0))
                .map_err(|e| ApiError::new("INVALID_VALUE", &[&arg(0), &e]))?;
            Ok(V::M(
                ctx.db
                    .all(c.name)
                    .into_iter()
                    .filter(|(_, rec)| expr.eval(rec))
                    .map(|(r, rec)| (r, V::M(rec)))
                    .collect(),
            ))
        }
        Generic::GetAllWhere => {
            let expr = crate::expr::parse(&arg(0))
                .map_err(|e| ApiError::new("INVALID_VALUE", &[&arg(0), &e]))?;
            Ok(V::A(
                ctx.db
                    .all(c.name)
                    .into_iter()
                    .filter(|(_, rec)| expr.eval(rec))
                    .map(|(r, _)| V::S(r))
                    .collect(),
            ))
        }
        Generic::GetByNameLabel => Ok(V::A(
            ctx.db
                .find_by_field(c.name, "name_label", &arg(0))
                .into_iter()
                .map(V::S)
                .collect(),
        )),
        Generic::Get(f) => {
            let rec = require(ctx, c, &arg(0))?;
            Ok(rec.get(f).cloned().unwrap_or_else(void))
        }
        Generic::Set(f) => {
            let field = c
                .field(f)
                .ok_or_else(|| ApiError::new("INTERNAL_ERROR", &[f]))?;
            let v = get_arg(args, 1, &field.ty, f)?;
            ctx.db.update(c.name, &arg(0), |rec| {
                rec.insert(f.to_string(), v);
            })?;
            Ok(void())
        }
        Generic::AddTo(f) | Generic::RemoveFrom(f) => {
            let field = c
                .field(f)
                .ok_or_else(|| ApiError::new("INTERNAL_ERROR", &[f]))?;
            let r = arg(0);
            let adding = matches!(g, Generic::AddTo(_));
            let out = match field.ty {
                Ty::Map(_, vt) => {
                    let key = arg(1);
                    let val = if adding {
                        Some(get_arg(args, 2, vt, f)?)
                    } else {
                        None
                    };
                    ctx.db.update(c.name, &r, |rec| {
                        let mut m = match rec.get(f) {
                            Some(V::M(m)) => m.clone(),
                            _ => BTreeMap::new(),
                        };
                        match val {
                            Some(v) => {
                                if m.contains_key(&key) {
                                    return Err(ApiError::new(
                                        "MAP_DUPLICATE_KEY",
                                        &[c.name, f, &r, &key],
                                    ));
                                }
                                m.insert(key.clone(), v);
                            }
                            None => {
                                m.remove(&key);
                            }
                        }
                        rec.insert(f.to_string(), V::M(m));
                        Ok(())
                    })?
                }
                Ty::Set(et) => {
                    let val = get_arg(args, 1, et, f)?;
                    ctx.db.update(c.name, &r, |rec| {
                        let mut s = match rec.get(f) {
                            Some(V::A(a)) => a.clone(),
                            _ => vec![],
                        };
                        s.retain(|x| *x != val);
                        if adding {
                            s.push(val);
                        }
                        rec.insert(f.to_string(), V::A(s));
                        Ok(())
                    })?
                }
                _ => Err(ApiError::new("INTERNAL_ERROR", &[f])),
            };
            out.map(|_| void())
        }
    }
}

// ---------------------------------------------------------------------------
// Hand-written messages

async fn custom_call(
    ctx: &Arc<Ctx>,
    c: &'static Class,
    m: &'static Message,
    session: &str,
    args: Vec<V>,
) -> R<V> {
    let mut typed = Vec::with_capacity(m.params.len());
    for (i, p) in m.params.iter().enumerate() {
        typed.push(get_arg(&args, i, &p.ty, p.name)?);
    }
    let s = |i: usize| typed.get(i).map(param_str).unwrap_or_default();
    match (c.name, m.name) {
        ("session", "login_with_password") => login(ctx, &s(0), &s(1), &s(3)).await,
        ("session", "logout") | ("session", "local_logout") => {
            ctx.sessions().remove(session);
            let _ = ctx.db.delete("session", session);
            Ok(void())
        }
        ("session", "get_this_host") | ("session", "get_this_user") => {
            let rec = require(ctx, c, &s(0))?;
            let f = if m.name == "get_this_host" {
                "this_host"
            } else {
                "this_user"
            };
            Ok(rec.get(f).cloned().unwrap_or(V::str(NULL_REF)))
        }
        ("session", "get_all_subject_identifiers") => Ok(V::A(vec![])),
        ("event", _) => crate::events::call(ctx, m.name, session, &typed).await,
        ("task", "create") => Ok(V::S(create_task(ctx, &s(0), &s(1), session)?)),
        ("task", "destroy") => {
            require(ctx, c, &s(0))?;
            ctx.assert_task_op(session, &s(0))?;
            ctx.db.delete("task", &s(0))?;
            ctx.task_owners().remove(&s(0));
            Ok(void())
        }
        ("task", "cancel") => {
            let r = s(0);
            require(ctx, c, &r)?;
            ctx.assert_task_op(session, &r)?;
            ctx.db.update("task", &r, |rec| {
                if rec.get("status").and_then(V::as_str) == Some("pending") {
                    rec.insert("status".into(), V::str("cancelling"));
                }
            })?;
            Ok(void())
        }
        ("task", setter) => {
            let f = setter.trim_start_matches("set_");
            let v = typed.get(1).cloned().unwrap_or_else(void);
            let r = s(0);
            require(ctx, c, &r)?;
            ctx.assert_task_op(session, &r)?;
            ctx.db.update("task", &r, |rec| {
                rec.insert(f.to_string(), v);
                if f == "status" && rec.get("status").and_then(V::as_str) != Some("pending") {
                    rec.insert("finished".into(), now_datetime());
                }
            })?;
            Ok(void())
        }
        ("host", "get_servertime") | ("host", "get_server_localtime") => {
            require(ctx, c, &s(0))?;
            Ok(now_datetime())
        }
        ("host", "get_server_certificate") => {
            require(ctx, c, &s(0))?;
            Ok(V::S(
                ctx.certificate_pem
                    .lock()
                    .map(|p| p.clone())
                    .unwrap_or_default(),
            ))
        }
        ("host", "compute_free_memory") => {
            require(ctx, c, &s(0))?;
            let probe = ctx.probe.clone();
            let free = tokio::task::spawn_blocking(move || probe.free_memory())
                .await
                .map_err(|e| ApiError::new("INTERNAL_ERROR", &[&e.to_string()]))?
                .map_err(|e| ApiError::new("INTERNAL_ERROR", &[&e.to_string()]))?;
            Ok(V::I(free))
        }
        ("host", "set_https_only") => {
            let r = s(0);
            require(ctx, c, &r)?;
            let v = typed.get(1).cloned().unwrap_or(V::B(false));
            ctx.db.update("host", &r, |rec| {
                rec.insert("https_only".into(), v);
            })?;
            Ok(void())
        }
        ("host", "get_cpu_features") => {
            let rec = require(ctx, c, &s(0))?;
            Ok(match rec.get("cpu_info") {
                Some(V::M(m)) => m.get("features_hvm").cloned().unwrap_or_else(void),
                _ => void(),
            })
        }
        _ => Err(ApiError::new(
            "MESSAGE_METHOD_UNKNOWN",
            &[&format!("{}.{}", c.name, m.name)],
        )),
    }
}

async fn login(ctx: &Arc<Ctx>, uname: &str, pwd: &str, originator: &str) -> R<V> {
    // On the local Unix socket the caller is root already (the reference's
    // `preauth`): no credentials are checked.
    let local = crate::auth::is_local_root();
    let res = if local {
        Ok(())
    } else {
        let auth = ctx.auth.clone();
        let (u, p) = (uname.to_string(), pwd.to_string());
        tokio::task::spawn_blocking(move || auth.authenticate(&u, &p))
            .await
            .map_err(|e| ApiError::new("INTERNAL_ERROR", &[&e.to_string()]))?
    };
    if let Err(e) = res {
        tracing::info!("login failed for {uname:?}: {e}");
        // As the reference: slow down password guessing.
        tokio::time::sleep(ctx.login_failure_delay).await;
        return Err(ApiError::new(
            "SESSION_AUTHENTICATION_FAILED",
            &[uname, &e.to_string()],
        ));
    }
    let r = new_ref();
    let mut rec = Record::new();
    rec.insert("uuid".into(), V::S(new_uuid()));
    rec.insert("this_host".into(), V::S(ctx.host_ref.clone()));
    rec.insert("this_user".into(), V::str(NULL_REF));
    rec.insert("last_active".into(), now_datetime());
    rec.insert("validation_time".into(), now_datetime());
    let superuser = local || uname == "root";
    rec.insert("is_local_superuser".into(), V::B(superuser));
    rec.insert("auth_user_name".into(), V::str(uname));
    rec.insert("originator".into(), V::str(originator));
    ctx.db.create("session", &r, rec)?;
    let st = SessionState {
        last_active: Instant::now(),
        registration: None,
        subject: Subject {
            user: uname.to_string(),
            local_superuser: superuser,
            role: superuser.then_some("pool-admin"),
        },
        originator: originator.to_string(),
    };
    let group = st.group();
    ctx.sessions().insert(r.clone(), st);
    ctx.enforce_session_limit(&group);
    tracing::info!("session {r} opened for {uname:?}");
    Ok(V::S(r))
}

// ---------------------------------------------------------------------------
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

    #[test]
    fn finished_tasks_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let mk = |status: &str, finished: V| {
            let mut r = Record::new();
            r.insert("status".into(), V::str(status));
            r.insert("finished".into(), finished);
            let reference = new_ref();
            db.create("task", &reference, r).unwrap();
            reference
        };
        let old = mk("success", V::D("20200101T00:00:00Z".into()));
        let recent = mk("success", now_datetime());
        let pending = mk("pending", V::D("19700101T00:00:00Z".into()));
        gc_tasks(&db, Duration::from_secs(3600));
        assert!(!db.exists("task", &old));
        assert!(db.exists("task", &recent));
        assert!(db.exists("task", &pending));
    }
}
