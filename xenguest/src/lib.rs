//! xenguest: save, restore and live migration of Xen guests.
//!
//! The [`stream`] module family is pure data handling (no Xen calls): the
//! libxc migration stream (v3, reading v2), the libxl wrapper stream, the
//! `xl save` file header and the PV page-table normalisation helpers.

pub mod migrate;
pub mod pfnlog;
pub mod restore;
pub mod save;
pub mod stream;
