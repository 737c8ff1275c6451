//! `host.*`: the custom messages about this host.

pub mod bootstrap;

use crate::generated::errors;
use crate::generated::records::Host;
use crate::model::typed::{Ref, Wire};
use crate::model::value::V;
use crate::model::Msg;
use crate::rpc::{ready, BoxFut, Ctx, Impl, Req, R};
use std::sync::Arc;

pub const HANDLERS: &[(Msg, Impl)] = &[
    (Msg::HostGetServertime, Impl::Custom(get_servertime)),
    (Msg::HostGetServerLocaltime, Impl::Custom(get_servertime)),
    (
        Msg::HostGetServerCertificate,
        Impl::Custom(get_server_certificate),
    ),
    (
        Msg::HostComputeFreeMemory,
        Impl::Custom(compute_free_memory),
    ),
    // Read by the HTTP front: plain HTTP from the network is then refused.
    (Msg::HostSetHttpsOnly, Impl::Custom(set_https_only)),
];

fn host(ctx: &Ctx, q: &Req) -> R<Host> {
    let r: Ref<Host> = q.get(0);
    ctx.db
        .get_typed(&r)
        .ok_or_else(|| errors::handle_invalid("host", r.as_str()))
}

fn get_servertime(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    ready(host(&ctx, &q).map(|_| crate::model::typed::DateTime::now().to_v()))
}

fn get_server_certificate(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    ready(host(&ctx, &q).map(|_| {
        V::S(
            ctx.certificate_pem
                .lock()
                .map(|p| p.clone())
                .unwrap_or_default(),
        )
    }))
}

fn compute_free_memory(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    Box::pin(async move {
        host(&ctx, &q)?;
        let probe = ctx.probe.clone();
        let free = tokio::task::spawn_blocking(move || probe.free_memory())
            .await
            .map_err(|e| errors::internal_error(&e.to_string()))?
            .map_err(|e| errors::internal_error(&e.to_string()))?;
        Ok(V::I(free))
    })
}

fn set_https_only(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    let r: Ref<Host> = q.get(0);
    let v: bool = q.get(1);
    ready(
        ctx.db
            .update_typed(&r, |h| h.https_only = v)
            .map(|_| crate::rpc::void())
            .map_err(Into::into),
    )
}
