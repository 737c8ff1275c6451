//! `task.*`: created by clients or for `Async.` calls, cancelled, and
//! progressed by whoever runs them.

use super::{create_task, ready, void, BoxFut, Ctx, Impl, Req};
use crate::datamodel::Msg;
use crate::generated::records::{Task, TaskStatusType};
use crate::typed::{DateTime, Object, Ref, Wire};
use std::sync::Arc;

pub(super) const HANDLERS: &[(Msg, Impl)] = &[
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
    ready(create_task(&ctx, &q.str(0), &q.str(1)).map(|r| r.to_v()))
}

fn destroy(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let r = q.str(0);
    ready(
        ctx.db
            .delete(Task::CLASS, &r)
            .map(|_| void())
            .map_err(Into::into),
    )
}

fn update(ctx: &Ctx, q: &Req, f: impl FnOnce(&mut Task)) -> BoxFut {
    let r: Ref<Task> = q.get(0);
    ready(
        ctx.db
            .update_typed(&r, f)
            .map(|_| void())
            .map_err(Into::into),
    )
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
