//! Raw, bindgen-generated FFI declarations for the Xen 4.17 control
//! libraries (libxenctrl, libxenguest, libxenforeignmemory, libxenevtchn).
//!
//! Nothing here is safe to call without reading the C headers; use the
//! `xenctrl` crate instead. Generated from the headers in Debian's
//! `libxen-dev` with `__XEN_TOOLS__` defined so domctl/sysctl are visible.
//!
//! Note: since Xen 4.16 log-dirty operations that take a bitmap live in
//! `xc_logdirty_control`; `xc_shadow_control` only takes the op, the
//! allocation in MiB and the mode.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all, rustdoc::all, missing_docs, unnecessary_transmutes)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
