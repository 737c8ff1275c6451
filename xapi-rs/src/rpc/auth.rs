//! Checking credentials for `session.login_with_password`.
//!
//! Production uses PAM against the host's accounts, service `xapi` as in the
//! reference (the package installs `/etc/pam.d/xapi`); tests use
//! [`StaticAuth`]. The choice is made at run time.

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Rejected(String),
}

pub trait Authenticator: Send + Sync {
    /// Check `user`/`password`. Called from a blocking thread.
    fn authenticate(&self, user: &str, password: &str) -> Result<(), AuthError>;
}

/// Accepts exactly the given user/password pairs (tests, `--no-pam`).
pub struct StaticAuth {
    pub users: Vec<(String, String)>,
}

impl Authenticator for StaticAuth {
    fn authenticate(&self, user: &str, password: &str) -> Result<(), AuthError> {
        if !user.is_empty() && self.users.iter().any(|(u, p)| u == user && p == password) {
            Ok(())
        } else {
            Err(AuthError::Rejected("Authentication failure".to_string()))
        }
    }
}

/// Rejects everyone (`--no-pam` without test credentials).
pub struct DenyAll;

impl Authenticator for DenyAll {
    fn authenticate(&self, _: &str, _: &str) -> Result<(), AuthError> {
        Err(AuthError::Rejected("Authentication failure".into()))
    }
}

#[cfg(feature = "pam")]
pub struct PamAuth {
    pub service: String,
}

/// The PAM service logins use unless `--pam-service` names another. Without
/// `/etc/pam.d/xapi`, PAM applies its `other` service (Debian: deny).
pub const DEFAULT_PAM_SERVICE: &str = "xapi";

#[cfg(feature = "pam")]
impl Authenticator for PamAuth {
    fn authenticate(&self, user: &str, password: &str) -> Result<(), AuthError> {
        let mut a = pam::Authenticator::with_password(&self.service)
            .map_err(|e| AuthError::Rejected(format!("PAM: {e}")))?;
        a.get_handler().set_credentials(user, password);
        a.authenticate()
            .map_err(|_| AuthError::Rejected("Authentication failure".into()))
    }
}

tokio::task_local! {
    /// Set for calls that arrived on the local Unix socket.
    static LOCAL_ROOT: bool;
}

/// Runs `f` as a connection on the local Unix socket: as in the reference,
/// whoever can open that root-only socket is the local superuser, and
/// `session.login_with_password` there accepts any credentials (Ansible's
/// `xenserver_facts` logs in with empty ones).
pub async fn as_local_root<F: std::future::Future>(f: F) -> F::Output {
    LOCAL_ROOT.scope(true, f).await
}

/// Whether the current call came in on the local Unix socket.
pub fn is_local_root() -> bool {
    LOCAL_ROOT.try_with(|v| *v).unwrap_or(false)
}
