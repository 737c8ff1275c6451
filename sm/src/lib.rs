//! Storage manager: SR drivers. Today one, [`file::FileSr`]: a directory
//! of raw image files, the local SR a host gets on first start. The
//! networked drivers and VHD (the reference's on-disk layouts) come next,
//! behind the same small surface: create, destroy, find and measure the
//! VDIs of one SR. Calls block on the filesystem; async callers run them
//! on a blocking pool.

pub mod file;

/// What an SR driver can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SmError {
    /// The VDI's file does not exist.
    #[error("VDI {0} has no image in the SR")]
    NoSuchVdi(String),
    /// A VDI name that is not a uuid (it becomes a file name).
    #[error("{0:?} is not a VDI uuid")]
    BadVdiName(String),
    /// The SR's space would not hold the VDI.
    #[error("the SR has {free} bytes free, {wanted} wanted")]
    NoSpace { wanted: u64, free: u64 },
    /// The OS refused (with the path it was about).
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, SmError>;

/// An SR's sizes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrSpace {
    /// The filesystem's size.
    pub physical_size: u64,
    /// What is used on it.
    pub physical_utilisation: u64,
}
