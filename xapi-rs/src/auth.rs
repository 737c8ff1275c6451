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

/// Accepts exactly one user/password pair (tests, `--no-pam`).
pub struct StaticAuth {
    pub user: String,
    pub password: String,
}

impl Authenticator for StaticAuth {
    fn authenticate(&self, user: &str, password: &str) -> Result<(), AuthError> {
        if user == self.user && password == self.password && !self.user.is_empty() {
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
