//! `session.*`: logins (PAM or the static test credentials; on the local
//! Unix socket, none) and logouts. root and the local socket are the local
//! superuser, pool-admin; other accounts read only (see [`Subject`]).
//! Sessions are capped per user or originator (oldest evicted); a failed
//! login is answered after [`Ctx::login_failure_delay`].

use crate::generated::errors;
use crate::generated::records::Session;
use crate::model::typed::{DateTime, Object, Ref, Wire};
use crate::model::value::V;
use crate::model::Msg;
use crate::rpc::{new_ref, new_uuid, ready, BoxFut, Ctx, Impl, Req, Subject, R};
use std::sync::Arc;

pub const HANDLERS: &[(Msg, Impl)] = &[
    (
        Msg::SessionLoginWithPassword,
        Impl::Custom(login_with_password),
    ),
    (Msg::SessionLogout, Impl::Custom(logout)),
    (Msg::SessionLocalLogout, Impl::Custom(logout)),
    (
        Msg::SessionGetAllSubjectIdentifiers,
        Impl::Custom(get_all_subject_identifiers),
    ),
];

fn login_with_password(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    Box::pin(async move { login(&ctx, &q.str(0), &q.str(1), &q.str(3)).await })
}

fn logout(ctx: Arc<Ctx>, q: Req) -> BoxFut {
    ctx.forget_session(&q.session);
    let _ = ctx.db.delete(Session::CLASS, &q.session);
    ready(Ok(crate::rpc::void()))
}

fn get_all_subject_identifiers(_ctx: Arc<Ctx>, _q: Req) -> BoxFut {
    ready(Ok(V::A(vec![])))
}

async fn login(ctx: &Arc<Ctx>, uname: &str, pwd: &str, originator: &str) -> R<V> {
    // On the local Unix socket the caller is root already (the reference's
    // `preauth`): no credentials are checked.
    let local = crate::rpc::auth::is_local_root();
    let res = if local {
        Ok(())
    } else {
        let auth = ctx.auth.clone();
        let (u, p) = (uname.to_string(), pwd.to_string());
        tokio::task::spawn_blocking(move || auth.authenticate(&u, &p))
            .await
            .map_err(|e| errors::internal_error(&e.to_string()))?
    };
    if let Err(e) = res {
        tracing::info!("login failed for {uname:?}: {e}");
        // As the reference: slow down password guessing.
        tokio::time::sleep(ctx.login_failure_delay).await;
        return Err(errors::session_authentication_failed(uname, &e.to_string()));
    }
    let subject = Subject::new(uname, local || uname == "root");
    let r = Ref::<Session>::new(new_ref());
    let s = Session {
        uuid: new_uuid(),
        this_host: Ref::new(ctx.host_ref.clone()),
        last_active: DateTime::now(),
        validation_time: DateTime::now(),
        is_local_superuser: subject.local_superuser,
        auth_user_name: uname.into(),
        originator: originator.into(),
        ..Session::default()
    };
    ctx.db.create_typed(&r, &s)?;
    ctx.admit_session(r.as_str(), subject, originator);
    tracing::info!("session {r} opened for {uname:?}");
    Ok(r.to_v())
}
