//! Sessions as the RPC core tracks them (who they act for, when they were
//! last active, their event registration), with the reference's caps.

use super::{Ctx, R};
use crate::generated::errors;
use crate::model::value::V;
use crate::model::Role;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

pub(super) struct Registration {
    pub(super) classes: HashSet<String>,
    pub(super) last_id: u64,
}

pub(super) struct SessionState {
    pub(super) last_active: Instant,
    pub(super) registration: Option<Registration>,
    pub(super) subject: Subject,
    pub(super) originator: String,
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
    pub fn new(user: &str, local_superuser: bool) -> Subject {
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum SessionGroup {
    Anonymous,
    Originator(String),
    User(String),
}

impl SessionState {
    pub(super) fn group(&self) -> SessionGroup {
        let root = self.subject.user.is_empty() || self.subject.user == "root";
        match (root, self.originator.is_empty()) {
            (true, true) => SessionGroup::Anonymous,
            (true, false) => SessionGroup::Originator(self.originator.clone()),
            (false, _) => SessionGroup::User(self.subject.user.clone()),
        }
    }
}

impl Ctx {
    /// Starts tracking a session just created in the database, evicting
    /// its group's least recently active ones beyond the cap.
    pub fn admit_session(&self, r: &str, subject: Subject, originator: &str) {
        let st = SessionState {
            last_active: Instant::now(),
            registration: None,
            subject,
            originator: originator.to_string(),
        };
        let group = st.group();
        self.sessions().insert(r.to_string(), st);
        self.enforce_session_limit(&group);
    }

    /// Stops tracking a session (logout).
    pub fn forget_session(&self, r: &str) {
        self.sessions().remove(r);
    }

    /// Who a live session acts for.
    pub fn session_subject(&self, session: &str) -> Option<Subject> {
        self.sessions().get(session).map(|st| st.subject.clone())
    }

    /// Destroys the least recently active sessions of `group` beyond its limit.
    pub(super) fn enforce_session_limit(&self, group: &SessionGroup) {
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

    pub(super) fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionState>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validate a session reference and mark it active; its role.
    pub(super) fn check_session(&self, v: Option<&V>) -> R<(String, Role)> {
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

    pub(super) fn session_alive(&self, r: &str) -> bool {
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
