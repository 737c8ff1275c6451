//! `event.*`, served by [`crate::rpc::events`].

use crate::model::Msg;
use crate::rpc::events;
use crate::rpc::{BoxFut, Ctx, Impl, Req};
use std::sync::Arc;

pub const HANDLERS: &[(Msg, Impl)] = &[
    (Msg::EventRegister, Impl::Custom(register)),
    (Msg::EventUnregister, Impl::Custom(unregister)),
    (Msg::EventNext, Impl::Custom(next)),
    (Msg::EventFrom, Impl::Custom(from)),
    (Msg::EventGetCurrentId, Impl::Custom(get_current_id)),
    (Msg::EventInject, Impl::Custom(inject)),
];

fn register(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    crate::rpc::ready(Ok(events::register(
        &ctx,
        &q.session,
        &q.get::<Vec<String>>(0),
        true,
    )))
}

fn unregister(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    crate::rpc::ready(Ok(events::register(
        &ctx,
        &q.session,
        &q.get::<Vec<String>>(0),
        false,
    )))
}

fn next(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    Box::pin(async move { events::next(&ctx, &q.session).await })
}

fn from(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    Box::pin(async move {
        let classes: Vec<String> = q.get(0);
        let token: String = q.get(1);
        let timeout: f64 = q.get(2);
        events::from_token(&ctx, &q.session, &classes, &token, timeout).await
    })
}

fn get_current_id(ctx: Arc<Ctx>, _q: Req) -> BoxFut {
    crate::rpc::ready(Ok(events::get_current_id(&ctx)))
}

fn inject(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    crate::rpc::ready(events::inject(&ctx, &q.str(0), &q.str(1)))
}
