//! The hypervisor side: what the toolstack reads from and does to Xen
//! (host facts today; domain build, devices and tracking as VMs arrive).
//! It never sees the API's wire types.

pub mod probe;
