//! `task.*`: created by clients or for `Async.` calls, cancelled, and
//! progressed by whoever runs them. A task belongs to the user whose
//! session created it: others need `task.destroy/any` to change it.

use crate::generated::errors;
use crate::generated::records::{Task, TaskStatusType};
use crate::model::typed::{DateTime, Object, Ref, Wire};
use crate::model::{Msg, Role};
use crate::rpc::{create_task, ready, void, BoxFut, Ctx, Impl, Req, R};
use std::sync::Arc;

pub const HANDLERS: &[(Msg, Impl)] = &[
    (Msg::TaskCreate, Impl::Custom(create)),
    (Msg::TaskDestroy, Impl::Custom(destroy)),
    (Msg::TaskCancel, Impl::Custom(cancel)),
    (Msg::TaskSetStatus, Impl::Custom(set_status)),
    (Msg::TaskSetProgress, Impl::Custom(set_progress)),
    (Msg::TaskSetResult, Impl::Custom(set_result)),
    (Msg::TaskSetErrorInfo, Impl::Custom(set_error_info)),
    // Custom in the reference; plain field updates here.
    (Msg::TaskSetOtherConfig, Impl::Generic),
    (Msg::TaskAddToOtherConfig, Impl::Generic),
    (Msg::TaskRemoveFromOtherConfig, Impl::Generic),
];

fn create(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    ready(create_task(&ctx, &q.str(0), &q.str(1), &q.session).map(|r| r.to_v()))
}

/// The reference's `assert_op_valid`: the task exists, and the caller's
/// user owns it or has `task.destroy/any` (pool-admin, pool-operator).
fn assert_op_valid(ctx: &Ctx, session: &str, task: &Ref<Task>) -> R<()> {
    if !ctx.db.exists(Task::CLASS, task.as_str()) {
        return Err(errors::handle_invalid(Task::CLASS, task.as_str()));
    }
    let me = ctx.session_subject(session);
    let owner = ctx.task_owner(task.as_str());
    let own = matches!((&me, &owner), (Some(me), Some(o)) if &me.user == o);
    let any = me
        .as_ref()
        .is_some_and(|s| matches!(s.role, Role::PoolAdmin | Role::PoolOperator));
    if own || any {
        return Ok(());
    }
    Err(errors::rbac_permission_denied(
        "task.destroy/any",
        "No permission in user session. (Roles with this permission: pool-admin, pool-operator)",
    ))
}

fn destroy(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let r: Ref<Task> = q.get(0);
    ready((|| {
        assert_op_valid(&ctx, &q.session, &r)?;
        ctx.db.delete(Task::CLASS, r.as_str())?;
        ctx.forget_task_owner(r.as_str());
        Ok(void())
    })())
}

fn update(ctx: &Ctx, q: &Req, f: impl FnOnce(&mut Task)) -> BoxFut {
    let r: Ref<Task> = q.get(0);
    ready((|| {
        assert_op_valid(ctx, &q.session, &r)?;
        ctx.db.update_typed(&r, f)?;
        Ok(void())
    })())
}

fn cancel(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    update(&ctx, &q, |t| {
        if t.status == TaskStatusType::Pending {
            t.status = TaskStatusType::Cancelling;
        }
    })
}

fn set_status(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let v: TaskStatusType = q.get(1);
    update(&ctx, &q, |t| {
        t.status = v;
        if v != TaskStatusType::Pending {
            t.finished = DateTime::now();
        }
    })
}

fn set_progress(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let v: f64 = q.get(1);
    update(&ctx, &q, |t| t.progress = v)
}

fn set_result(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let v: String = q.get(1);
    update(&ctx, &q, |t| t.result = v)
}

fn set_error_info(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let v: Vec<String> = q.get(1);
    update(&ctx, &q, |t| t.error_info = v)
}
