//! Client errors.

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A failed xenstore operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// xenstored answered XS_ERROR with an errno name (ENOENT, EACCES, ...).
    #[error("xenstore {op} {path}: {errno}")]
    Xenstore {
        /// The request type, e.g. `XS_READ`.
        op: &'static str,
        /// The path (or domid) the request was about.
        path: String,
        /// The errno name xenstored returned.
        errno: String,
    },
    /// The connection failed.
    #[error("xenstore I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Could not connect to any xenstore endpoint.
    #[error("xenstore connect {path}: {source}")]
    Connect {
        /// Endpoint tried last.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The peer sent something that breaks the protocol.
    #[error("xenstore protocol error: {0}")]
    Protocol(String),
    /// The connection closed while a request was outstanding.
    #[error("xenstore connection closed")]
    Closed,
}

impl Error {
    /// The errno name xenstored returned, if any.
    pub fn errno(&self) -> Option<&str> {
        match self {
            Error::Xenstore { errno, .. } => Some(errno),
            _ => None,
        }
    }

    /// True if xenstored said the node does not exist.
    pub fn is_enoent(&self) -> bool {
        self.errno() == Some("ENOENT")
    }

    /// True if a transaction must be retried.
    pub fn is_eagain(&self) -> bool {
        self.errno() == Some("EAGAIN")
    }
}
