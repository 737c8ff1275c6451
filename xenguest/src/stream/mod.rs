//! Migration stream formats, as pure data (no Xen calls).
//!
//! * [`libxc`]: the libxc stream (v3 written, v2 and v3 read): headers and
//!   typed records with strict validation.
//! * [`libxl`]: the libxl wrapper stream ("LibxlFmt" v2).
//! * [`xl`]: the `xl save` file header.
//! * [`Decoder`]: an incremental push/pull decoder over byte buffers, usable
//!   from async code; [`StreamReader`] drives it over `std::io::Read`.
//! * [`StreamWriter`]: encodes to `std::io::Write`.
//! * [`pte`]: x86-64 PV page-table normalisation / localisation.
//!
//! The reference (libxenguest) PV save order is: image and domain headers;
//! X86_PV_INFO, X86_CPUID_POLICY, X86_MSR_POLICY, STATIC_DATA_END;
//! X86_PV_P2M_FRAMES; PAGE_DATA batches; X86_TSC_INFO, SHARED_INFO; per vCPU
//! BASIC, EXTENDED, XSAVE, MSRS; END.

mod bytes;
pub mod decoder;
pub mod error;
pub mod fuzzing;
pub mod libxc;
pub mod libxl;
pub mod pte;
pub mod reader;
pub mod sample;
pub mod writer;
pub mod xl;

#[cfg(test)]
mod tests;

pub use decoder::{Decoder, DecoderOptions, Format, Item, MissingStaticData};
pub use error::{Result, StreamError};
pub use libxc::{
    CpuidLeaf, DomainHeader, DomainType, HvmParam, ImageHeader, MsrEntry, PageData, PageEntry,
    PageType, Record, VcpuKind, VcpuMsr, VcpuRecord, X86PvInfo, X86PvP2mFrames, X86TscInfo,
};
pub use libxl::{EmulatorId, LibxlHeader, LibxlRecord};
pub use reader::{decode_bytes, read_stream, StreamReader};
pub use writer::StreamWriter;
pub use xl::XlHeader;
