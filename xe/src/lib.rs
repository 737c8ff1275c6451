//! `xe`: the drop-in command line client of the Xen toolstack, and the pieces
//! of the thin CLI protocol that the server's `POST /cli` handler shares.
//!
//! * [`protocol`]: the thin CLI protocol v0.2 codec (both directions).
//! * [`args`]: the client's command-line parsing (`-s`, `-p`, `~/.xe`, ...)
//!   and the server's parsing of the request body into a command line.
//! * [`render`]: the reference's output formats (records, `--minimal`,
//!   `params=`), built around a field table a datamodel can generate.

pub mod args;
pub mod protocol;
pub mod render;
