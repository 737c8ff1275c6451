//! Async xenstore client speaking the xenstored wire protocol directly
//! over `/run/xenstored/socket` (or `/dev/xen/xenbus`).
//!
//! ```no_run
//! # async fn f() -> xenstore::Result<()> {
//! let xs = xenstore::Xenstore::connect().await?;
//! xs.write("/tool/example", "1").await?;
//! let n = xs
//!     .transaction(|tx| async move {
//!         let v: u32 = tx.read_string("/tool/example").await?.parse().unwrap_or(0);
//!         tx.write("/tool/example", (v + 1).to_string()).await?;
//!         Ok(v + 1)
//!     })
//!     .await?;
//! let mut w = xs.watch("@releaseDomain").await?;
//! let _first = w.next().await; // fires once when set
//! # let _ = n; Ok(()) }
//! ```
//!
//! [`fake`] holds an in-process xenstored for tests.

mod client;
mod error;
pub mod fake;
mod perms;
pub mod wire;

pub use client::{control_shutdown_path, Watch, WatchEvent, Xenstore, SOCKET_PATH, XENBUS_PATH};
pub use error::{Error, Result};
pub use perms::{Access, BadPerm, Perm};
