//! Errors from the Xen control libraries.

use std::fmt;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// An errno value with its symbolic meaning, as returned by a Xen library.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current `errno`, read right after a failed call.
    pub fn last() -> Self {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({})", self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // io::Error renders "<message> (os error N)"; keep only the message so
        // our own "(errno N)" suffix is not duplicated.
        let msg = std::io::Error::from_raw_os_error(self.0).to_string();
        let msg = msg.split(" (os error").next().unwrap_or(&msg).to_string();
        write!(f, "{msg} (errno {})", self.0)
    }
}

/// Failure of a Xen library call or of argument validation before one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A libxenctrl/libxenforeignmemory/libxenevtchn call failed.
    ///
    /// `context` names the object operated on (e.g. `domid 999`), so the
    /// message reads `xc_domain_pause(domid 999): No such process (errno 3)`.
    #[error("{op}({context}): {errno}")]
    Xen {
        /// The C function that failed.
        op: &'static str,
        /// What it was applied to.
        context: String,
        /// The errno it left behind.
        errno: Errno,
    },
    /// Xen answered, but the domain is not in the state the caller waited
    /// for (e.g. it shut down for another reason, or vanished).
    #[error("{op}({context}): {reason}")]
    State {
        /// The operation that was attempted.
        op: &'static str,
        /// What it was applied to.
        context: String,
        /// What was found instead.
        reason: String,
    },
    /// The arguments were rejected before calling into Xen.
    #[error("{op}: invalid argument: {reason}")]
    Invalid {
        /// The operation that was attempted.
        op: &'static str,
        /// Why the arguments were refused.
        reason: String,
    },
}

impl Error {
    /// Builds an [`Error::Xen`] from the current `errno`.
    pub fn last(op: &'static str, context: impl Into<String>) -> Self {
        Error::Xen {
            op,
            context: context.into(),
            errno: Errno::last(),
        }
    }

    /// The errno of a failed call, if this came from Xen.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Xen { errno, .. } => Some(errno.0),
            Error::Invalid { .. } | Error::State { .. } => None,
        }
    }

    /// The operation that failed.
    pub fn op(&self) -> &'static str {
        match self {
            Error::Xen { op, .. } | Error::Invalid { op, .. } | Error::State { op, .. } => op,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_op_context_and_errno() {
        let e = Error::Xen {
            op: "xc_domain_pause",
            context: "domid 999".into(),
            errno: Errno(3),
        };
        assert_eq!(
            e.to_string(),
            "xc_domain_pause(domid 999): No such process (errno 3)"
        );
        assert_eq!(e.errno(), Some(3));
        assert_eq!(e.op(), "xc_domain_pause");
    }

    #[test]
    fn invalid_has_no_errno() {
        let e = Error::Invalid {
            op: "xenforeignmemory_map",
            reason: "no pages".into(),
        };
        assert_eq!(e.errno(), None);
        assert_eq!(
            e.to_string(),
            "xenforeignmemory_map: invalid argument: no pages"
        );
    }
}
