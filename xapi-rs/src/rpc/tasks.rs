//! Tasks: the records behind `Async.` calls, their owners, and their
//! clean-up.

use super::{new_ref, new_uuid, run, Ctx, Impl, Req, R};
use crate::db::Db;
use crate::generated::errors;
use crate::generated::records::{Task, TaskAllowedOperations, TaskStatusType};
use crate::model::typed::{DateTime, Object, Ref, Wire};
use crate::model::value::{to_xml_string, V};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The reference keeps at most 200 tasks (`max_tasks`), deleting the
/// longest-finished completed ones first, never pending ones.
pub const MAX_TASKS: usize = 200;
/// Pending tasks beyond this are refused with TOO_MANY_PENDING_TASKS.
pub const MAX_PENDING_TASKS: usize = 1000;

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

pub(super) fn is_pending(t: &Task) -> bool {
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
    let cutoff = DateTime(crate::model::value::datetime_from_unix(
        crate::model::value::now_unix() - retention.as_secs() as i64,
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

pub(super) fn finish_task(ctx: &Ctx, task: &Ref<Task>, res: R<Option<V>>) {
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

pub(super) fn start_task(ctx: &Arc<Ctx>, imp: Impl, req: Req, method: &str) -> R<V> {
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

impl Ctx {
    pub(super) fn task_owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.task_owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user whose session created a task.
    pub fn task_owner(&self, task: &str) -> Option<String> {
        self.task_owners().get(task).cloned()
    }

    /// Forgets a destroyed task's owner.
    pub fn forget_task_owner(&self, task: &str) {
        self.task_owners().remove(task);
    }
}
