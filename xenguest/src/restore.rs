//! x86-64 PV restore: from an `xl save` file, a libxl stream or a bare
//! libxc v2/v3 stream to a running (or paused) domain, doing what
//! libxenguest (`xg_sr_restore*.c`) and libxl around it do for a PV guest.
//!
//! ```no_run
//! use xenguest::restore::{restore, RestoreOptions};
//! let mut f = std::fs::File::open("/var/tmp/guest.save").unwrap();
//! let r = restore(&mut f, &RestoreOptions { paused: true, ..Default::default() }).unwrap();
//! println!("domid {}", r.domid);
//! ```
//!
//! Validation of the stream's syntax is the decoder's job; this module
//! checks what needs the domain (pfn ranges, page types of cr3 / start_info
//! / p2m frames).  On any error the half-built domain is destroyed and the
//! xenstore nodes and userdata file written for it are removed.

pub mod layout;
pub mod tree;

use std::io::Read;

use thiserror::Error;
use xenctrl::{
    CpuPolicy, DomId, DomainConfig, ForeignMemory, Pin, Prot, TscInfo, VcpuContext, XenCtrl,
};

use crate::stream::pte::{self, PtLevel};
use crate::stream::{
    DecoderOptions, DomainType, Item, LibxlRecord, PageData, PageType, Record, StreamError,
    StreamReader, VcpuKind,
};
use layout::{StartInfoUpdate, PAGE};
use tree::{Perms, SavedConfig, TreeParams};

/// libxl's `LIBXL_MAXMEM_CONSTANT`: slack added to a PV guest's maxmem.
const MAXMEM_SLACK_KIB: u64 = 1024;
const INVALID_MFN: u64 = u64::MAX;
const PIN_BATCH: usize = 1024;
/// Where libxl keeps per-domain userdata (`XEN_LIB_DIR`).
pub const XEN_LIB_DIR: &str = "/var/lib/xen";

/// What the caller may decide.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Domain name (default: the saved config's, else `restored-DOMID`).
    pub name: Option<String>,
    /// Memory in MiB (default: the saved config's, else the p2m size).
    pub memory_mib: Option<u64>,
    /// Maximum vCPUs (default: the saved config's, else 1).
    pub max_vcpus: Option<u32>,
    /// The domain's handle (default: the saved config's, else random): a
    /// toolstack resuming its own VM gives the VM's uuid.
    pub uuid: Option<[u8; 16]>,
    /// Leave the domain paused.
    pub paused: bool,
    /// Skip the xenstore part (introduce, tree, userdata): for tests of
    /// the hypervisor side only.
    pub no_xenstore: bool,
    /// An incoming migration: the saved UUID is kept even if a domain
    /// with it exists here (a localhost migration's source, whose `/vm`
    /// entry is then left alone), and a name in use gets xl's temporary
    /// `NAME--incoming` (see [`rename`]).
    pub incoming: bool,
}

/// The name xl gives an incoming domain while the source has the name.
pub fn incoming_name(name: &str) -> String {
    format!("{name}--incoming")
}

/// The restored domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub domid: DomId,
    pub name: String,
    pub uuid: String,
    pub store_mfn: u64,
    pub store_port: u32,
    pub console_mfn: u64,
    pub console_port: u32,
    /// Pages populated.
    pub pages: u64,
    /// vCPUs brought online.
    pub vcpus: u32,
    /// Streams' libxc version (2 or 3).
    pub stream_version: u32,
}

/// Why a restore failed.
#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
    #[error("xen: {0}")]
    Xen(#[from] xenctrl::Error),
    #[error("xenstore: {0}")]
    Xenstore(#[from] xenstore::Error),
    #[error("unsupported stream: {0}")]
    Unsupported(String),
    #[error("bad stream content: {0}")]
    Invalid(String),
    #[error("{0}")]
    Config(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, RestoreError>;

/// Whether `XENGUEST_TRACE` is set (the steps of a save, restore or
/// migration are then logged to stderr).
pub(crate) fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("XENGUEST_TRACE").is_some())
}

/// Logs one step with `prefix` and the milliseconds since the first
/// trace line (for reading where the time goes), if tracing.
pub(crate) fn trace_step(prefix: &str, what: std::fmt::Arguments<'_>) {
    static T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    if tracing() {
        let ms = T0
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
            * 1e3;
        eprintln!("{prefix} [{ms:9.1} ms] {what}");
    }
}

macro_rules! trace {
    ($($a:tt)*) => {
        trace_step("xenguest:", format_args!($($a)*))
    };
}

/// A page the guest uses as plain memory (XALLOC: one sent without data
/// because it was zero).
fn is_data_page(t: PageType) -> bool {
    matches!(t, PageType::NoTab | PageType::XAlloc)
}

fn invalid<T>(msg: String) -> Result<T> {
    Err(RestoreError::Invalid(msg))
}

#[derive(Default)]
struct VcpuState {
    basic: Option<Vec<u8>>,
    extended: Option<Vec<u8>>,
    xsave: Option<Vec<u8>>,
    msrs: Option<Vec<u8>>,
}

/// Restore state for one domain.
struct Ctx<'a> {
    xc: &'a XenCtrl,
    fm: &'a ForeignMemory,
    domid: DomId,
    max_vcpus: u32,
    maxmem_set: bool,
    store_port: u32,
    console_port: u32,
    /// Highest valid pfn (from X86_PV_P2M_FRAMES).
    max_pfn: Option<u64>,
    p2m: Vec<u64>,
    types: Vec<PageType>,
    p2m_frames: Vec<u64>,
    populated: u64,
    cpuid: Option<Vec<u8>>,
    msr: Option<Vec<u8>>,
    vcpus: Vec<VcpuState>,
    shared_info_frame: u64,
    store_mfn: u64,
    console_mfn: u64,
    online: Vec<bool>,
    libxc_done: bool,
}

impl Ctx<'_> {
    fn pfn_to_mfn(&self, pfn: u64) -> Option<u64> {
        self.p2m
            .get(usize::try_from(pfn).ok()?)
            .copied()
            .filter(|&m| m != INVALID_MFN)
    }

    fn check_pfn(&self, pfn: u64, what: &str) -> Result<()> {
        let max = self
            .max_pfn
            .ok_or_else(|| RestoreError::Invalid(format!("{what} before X86_PV_P2M_FRAMES")))?;
        if pfn > max {
            return invalid(format!(
                "{what}: pfn {pfn:#x} beyond the advertised range 0..={max:#x}"
            ));
        }
        Ok(())
    }

    fn set_max_pfn(&mut self, end_pfn: u64) -> Result<()> {
        // Guard against absurd p2m sizes before allocating: 2^36 pfns is
        // 256 TiB of guest, far above what Xen gives a PV guest.
        if end_pfn >= 1 << 36 {
            return invalid(format!("p2m end pfn {end_pfn:#x} is implausibly large"));
        }
        let n = end_pfn as usize + 1;
        if n > self.p2m.len() {
            self.p2m.resize(n, INVALID_MFN);
            self.types.resize(n, PageType::XTab);
        }
        self.max_pfn = Some(self.max_pfn.map_or(end_pfn, |m| m.max(end_pfn)));
        Ok(())
    }

    fn populate(&mut self, pfns: &[u64]) -> Result<()> {
        if pfns.is_empty() {
            return Ok(());
        }
        let mut frames = pfns.to_vec();
        self.xc.populate_physmap_exact(self.domid, 0, &mut frames)?;
        for (&pfn, &mfn) in pfns.iter().zip(&frames) {
            self.p2m[pfn as usize] = mfn;
        }
        self.populated += pfns.len() as u64;
        Ok(())
    }

    fn p2m_frames(&mut self, start: u32, end: u32, frames: &[u64]) -> Result<()> {
        self.set_max_pfn(u64::from(end))?;
        if !self.maxmem_set {
            // No config: size the guest from its p2m.
            let kib = (u64::from(end) + 1) * 4;
            self.xc.set_max_mem(self.domid, kib + MAXMEM_SLACK_KIB)?;
            self.xc.set_memmap_limit(self.domid, kib)?;
            self.maxmem_set = true;
        }
        let first = (start / 512) as usize;
        if self.p2m_frames.len() < first + frames.len() {
            self.p2m_frames.resize(first + frames.len(), u64::MAX);
        }
        self.p2m_frames[first..first + frames.len()].copy_from_slice(frames);
        Ok(())
    }

    fn page_data(&mut self, p: &PageData) -> Result<()> {
        for e in &p.entries {
            self.check_pfn(e.pfn, "PAGE_DATA")?;
        }
        // Types first (as the reference's set_page_type), then allocate.
        let mut new = Vec::new();
        for e in &p.entries {
            let i = e.pfn as usize;
            self.types[i] = e.ptype;
            let wants = !matches!(e.ptype, PageType::XTab | PageType::Broken);
            if wants && self.p2m[i] == INVALID_MFN && !new.contains(&e.pfn) {
                new.push(e.pfn);
            }
        }
        self.populate(&new)?;

        let mut mfns = Vec::new();
        let mut pages: Vec<Vec<u8>> = Vec::new();
        for (e, data) in p.pages() {
            let Some(d) = data else { continue };
            let mut buf = d.to_vec();
            if let Some(level) = e.ptype.table_level() {
                let lv = PtLevel::from_level(level).expect("levels 1..=4");
                let max = self.max_pfn.unwrap_or(0);
                let missing = pte::frames_to_populate(&buf, |f| {
                    f <= max && self.p2m[f as usize] != INVALID_MFN
                })
                .map_err(|e| RestoreError::Invalid(e.to_string()))?;
                let mut uniq: Vec<u64> = Vec::new();
                for f in missing {
                    if f > max {
                        return invalid(format!(
                            "L{level} page table at pfn {:#x} maps pfn {f:#x} beyond the advertised range 0..={max:#x}",
                            e.pfn
                        ));
                    }
                    if !uniq.contains(&f) {
                        uniq.push(f);
                    }
                }
                self.populate(&uniq)?;
                pte::localise_page(&mut buf, lv, |f| self.pfn_to_mfn(f)).map_err(|err| {
                    RestoreError::Invalid(format!("page table at pfn {:#x}: {err}", e.pfn))
                })?;
            }
            if e.ptype.table_level().is_none() {
                crate::pfnlog::record(e.pfn, &buf);
            } else {
                crate::pfnlog::forget(e.pfn);
            }
            mfns.push(self.p2m[e.pfn as usize]);
            pages.push(buf);
        }
        if mfns.is_empty() {
            return Ok(());
        }
        let mut map = self.fm.map(self.domid, Prot::ReadWrite, &mfns)?;
        for (i, page) in pages.iter().enumerate() {
            map.write(i * PAGE, page)?;
        }
        if crate::pfnlog::enabled() {
            let pfns: Vec<u64> = p
                .pages()
                .filter(|(_, d)| d.is_some())
                .map(|(e, _)| e.pfn)
                .collect();
            crate::pfnlog::log(format_args!("wrote"), &pfns);
        }
        Ok(())
    }

    fn shared_info(&mut self, saved: &[u8]) -> Result<()> {
        if saved.len() != PAGE {
            return invalid(format!("SHARED_INFO of {} bytes", saved.len()));
        }
        let mut si =
            self.fm
                .map_shared_info(self.domid, self.shared_info_frame, Prot::ReadWrite)?;
        let merged = layout::merge_shared_info(&si.to_bytes(), saved);
        si.write(0, &merged)?;
        Ok(())
    }

    fn vcpu(&mut self, kind: VcpuKind, id: u32, data: Vec<u8>) -> Result<()> {
        if id >= self.max_vcpus {
            return invalid(format!(
                "vCPU {id} record but the domain has {} vCPUs",
                self.max_vcpus
            ));
        }
        let v = &mut self.vcpus[id as usize];
        let slot = match kind {
            VcpuKind::Basic => &mut v.basic,
            VcpuKind::Extended => &mut v.extended,
            VcpuKind::Xsave => &mut v.xsave,
            VcpuKind::Msrs => &mut v.msrs,
        };
        *slot = Some(data);
        Ok(())
    }

    fn frame_of(
        &self,
        pfn: u64,
        want: &str,
        ok: impl Fn(PageType) -> bool,
    ) -> std::result::Result<u64, String> {
        let Some(max) = self.max_pfn else {
            return Err("no p2m".into());
        };
        if pfn > max {
            return Err(format!("beyond max pfn {max:#x}"));
        }
        let t = self.types[pfn as usize];
        if !ok(t) {
            return Err(format!("page type {t:?}, expected {want}"));
        }
        self.pfn_to_mfn(pfn)
            .ok_or_else(|| "not populated".to_string())
    }

    fn start_info(&mut self, blob: &mut [u8]) -> Result<()> {
        let pfn = layout::vcpu_start_info_pfn(blob);
        let mfn = self
            .frame_of(pfn, "a data page", is_data_page)
            .map_err(|e| RestoreError::Invalid(format!("start_info pfn {pfn:#x}: {e}")))?;
        let mut map = self.fm.map(self.domid, Prot::ReadWrite, &[mfn])?;
        let mut page = vec![0u8; PAGE];
        map.read(0, &mut page)?;
        let f = layout::start_info_frames(&page);
        let store = self
            .frame_of(f.store_pfn, "a data page", is_data_page)
            .map_err(|e| {
                RestoreError::Invalid(format!("xenstore ring pfn {:#x}: {e}", f.store_pfn))
            })?;
        let console = self
            .frame_of(f.console_pfn, "a data page", is_data_page)
            .map_err(|e| {
                RestoreError::Invalid(format!("console ring pfn {:#x}: {e}", f.console_pfn))
            })?;
        layout::rewrite_start_info(
            &mut page,
            &StartInfoUpdate {
                store_mfn: store,
                store_evtchn: self.store_port,
                console_mfn: console,
                console_evtchn: self.console_port,
                nr_pages: self.max_pfn.unwrap_or(0) + 1,
                shared_info_frame: self.shared_info_frame,
            },
        );
        map.write(0, &page)?;
        self.store_mfn = store;
        self.console_mfn = console;
        layout::set_vcpu_start_info(blob, mfn);
        Ok(())
    }

    /// The reference's `x86_pv_stream_complete`.
    fn complete(&mut self) -> Result<()> {
        if self.max_pfn.is_none() {
            return invalid("stream ended without X86_PV_P2M_FRAMES".into());
        }
        if self.vcpus.first().and_then(|v| v.basic.as_ref()).is_none() {
            return invalid("no X86_PV_VCPU_BASIC record for vCPU 0".into());
        }
        if crate::pfnlog::enabled() {
            // Debug: every data page still holds what was written to it.
            let p2m = self.p2m.clone();
            let fm = &self.fm;
            let domid = self.domid;
            crate::pfnlog::check("receiver-end", |pfns| {
                let mfns: Vec<u64> = pfns.iter().map(|&p| p2m[p as usize]).collect();
                match fm.map(domid, Prot::Read, &mfns) {
                    Ok(map) => (0..pfns.len())
                        .map(|i| {
                            let mut page = vec![0u8; PAGE];
                            map.read(i * PAGE, &mut page).ok()?;
                            Some(page)
                        })
                        .collect(),
                    Err(_) => vec![None; pfns.len()],
                }
            });
        }
        trace!("END: pinning page tables");
        // Pin page tables, lowest level first.
        for level in 1..=4u8 {
            let mfns: Vec<u64> = self
                .types
                .iter()
                .enumerate()
                .filter(|(_, t)| t.is_pinned() && t.table_level() == Some(level))
                .filter_map(|(pfn, _)| self.pfn_to_mfn(pfn as u64))
                .collect();
            trace!("pin {} L{level} tables", mfns.len());
            for chunk in mfns.chunks(PIN_BATCH) {
                self.xc
                    .mmuext_pin(self.domid, Pin::Level(u32::from(level)), chunk)?;
            }
        }
        let l4 = |t: PageType| t.table_level() == Some(4);
        for id in 0..self.vcpus.len() {
            let Some(mut blob) = self.vcpus[id].basic.take() else {
                continue;
            };
            if blob.len() != layout::vcpu::SIZE {
                return invalid(format!("vCPU {id} context of {} bytes", blob.len()));
            }
            if id == 0 {
                self.start_info(&mut blob)?;
            }
            layout::localise_vcpu(
                &mut blob,
                |p| self.frame_of(p, "a data page", is_data_page),
                |p| self.frame_of(p, "an L4 page table", l4),
            )
            .map_err(|e| RestoreError::Invalid(format!("vCPU {id}: {e}")))?;
            let mut ctx = VcpuContext::from_bytes(&blob).expect("size checked");
            trace!(
                "vCPU {id}: set context (cr3 {:#x}, gdt ents {}, flags {:#x})",
                u64::from_le_bytes(
                    blob[layout::vcpu::CTRLREG + 24..layout::vcpu::CTRLREG + 32]
                        .try_into()
                        .unwrap()
                ),
                u64::from_le_bytes(
                    blob[layout::vcpu::GDT_ENTS..layout::vcpu::GDT_ENTS + 8]
                        .try_into()
                        .unwrap()
                ),
                u64::from_le_bytes(
                    blob[layout::vcpu::FLAGS..layout::vcpu::FLAGS + 8]
                        .try_into()
                        .unwrap()
                ),
            );
            if let Err(e) = self.xc.set_vcpu_context(self.domid, id as u32, &mut ctx) {
                if tracing() {
                    let mut b2 = blob.clone();
                    b2[layout::vcpu::GDT_ENTS..layout::vcpu::GDT_ENTS + 8].fill(0);
                    let mut c2 = VcpuContext::from_bytes(&b2).expect("size");
                    let r = self.xc.set_vcpu_context(self.domid, id as u32, &mut c2);
                    trace!("diagnostic: without GDT: {r:?}");
                    let gdt_pfn = u64::from_le_bytes(
                        blob[layout::vcpu::GDT_FRAMES..layout::vcpu::GDT_FRAMES + 8]
                            .try_into()
                            .expect("8"),
                    );
                    trace!("gdt frame mfn {gdt_pfn:#x}");
                }
                return Err(e.into());
            }
            let v = &self.vcpus[id];
            if let Some(e) = v.extended.as_ref().filter(|e| !e.is_empty()) {
                self.xc.set_ext_vcpu_context(self.domid, id as u32, e)?;
            }
            if let Some(x) = v.xsave.as_ref().filter(|x| !x.is_empty()) {
                self.xc.set_vcpu_xsave(self.domid, id as u32, x)?;
            }
            if let Some(m) = v.msrs.as_ref().filter(|m| !m.is_empty()) {
                let msrs = xenctrl::VcpuMsr::from_bytes(m).ok_or_else(|| {
                    RestoreError::Invalid(format!("vCPU {id} MSRS of {} bytes", m.len()))
                })?;
                self.xc.set_vcpu_msrs(self.domid, id as u32, &msrs)?;
            }
            self.online[id] = true;
        }
        // Write the p2m into the guest's own p2m frames.
        let max = self.max_pfn.unwrap_or(0);
        let needed = (max as usize + 1).div_ceil(512);
        if self.p2m_frames.len() < needed {
            return invalid(format!(
                "X86_PV_P2M_FRAMES lists {} frames, {needed} needed",
                self.p2m_frames.len()
            ));
        }
        crate::pfnlog::log(format_args!("p2m frames"), &self.p2m_frames[..needed]);
        let mut frames = Vec::with_capacity(needed);
        for &pfn in &self.p2m_frames[..needed] {
            frames.push(
                self.frame_of(pfn, "a data page", is_data_page)
                    .map_err(|e| RestoreError::Invalid(format!("p2m frame pfn {pfn:#x}: {e}")))?,
            );
        }
        let mut bytes = Vec::with_capacity((max as usize + 1) * 8);
        for m in &self.p2m[..=max as usize] {
            bytes.extend_from_slice(&m.to_le_bytes());
        }
        trace!("writing the p2m into {} frames", frames.len());
        let mut map = self.fm.map(self.domid, Prot::ReadWrite, &frames)?;
        map.write(0, &bytes)?;
        drop(map);
        self.xc
            .gnttab_seed(self.domid, false, self.console_mfn, self.store_mfn, 0, 0)?;
        trace!("p2m written, grant table seeded");
        self.libxc_done = true;
        Ok(())
    }

    fn static_data_end(&mut self) -> Result<()> {
        if let Some(c) = &self.cpuid {
            let m = self.msr.clone().unwrap_or_default();
            let policy = CpuPolicy::from_bytes(c, &m)
                .ok_or_else(|| RestoreError::Invalid("malformed CPU policy".into()))?;
            self.xc.set_domain_cpu_policy(self.domid, &policy)?;
        }
        Ok(())
    }
}

fn cpuid_bytes(l: &[crate::stream::CpuidLeaf]) -> Vec<u8> {
    let mut v = Vec::with_capacity(l.len() * 24);
    for x in l {
        for w in [x.leaf, x.subleaf, x.a, x.b, x.c, x.d] {
            v.extend_from_slice(&w.to_le_bytes());
        }
    }
    v
}

fn msr_bytes(m: &[crate::stream::MsrEntry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(m.len() * 16);
    for x in m {
        v.extend_from_slice(&x.idx.to_le_bytes());
        v.extend_from_slice(&x.flags.to_le_bytes());
        v.extend_from_slice(&x.val.to_le_bytes());
    }
    v
}

/// Cleans up a half-built domain unless disarmed.
struct Cleanup<'a> {
    xc: &'a XenCtrl,
    rt: &'a tokio::runtime::Runtime,
    xs: Option<&'a xenstore::Xenstore>,
    domid: Option<DomId>,
    xs_roots: Vec<String>,
    userdata: Option<std::path::PathBuf>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        trace!(
            "cleanup: domain {:?}, {} xenstore roots",
            self.domid,
            self.xs_roots.len()
        );
        if let Some(d) = self.domid {
            if let Err(e) = self.xc.destroy_domain(d) {
                eprintln!("xenguest: cleanup: destroy domain {d}: {e}");
            }
        }
        if let Some(xs) = self.xs {
            for r in &self.xs_roots {
                if let Err(e) = self.rt.block_on(xs_path_cleanup(xs, r)) {
                    eprintln!("xenguest: cleanup: xenstore rm {r}: {e}");
                }
            }
        }
        if let Some(p) = &self.userdata {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Parents a cleanup never removes, even when empty.
const XS_KEEP: &[&str] = &[
    "/",
    "/local",
    "/local/domain",
    "/local/domain/0",
    "/vm",
    "/libxl",
];

/// Removes `path` and then each parent left empty by that (up to the
/// well-known roots), in one transaction: what libxl's
/// `libxl__xs_path_cleanup` does, so that e.g. the implicit
/// `/local/domain/0/backend/console` created by writing a domain's console
/// backend does not outlive it.
async fn xs_path_cleanup(xs: &xenstore::Xenstore, path: &str) -> Result<()> {
    let path = path.to_string();
    xs.transaction(|tx| {
        let path = path.clone();
        async move {
            match tx.rm(&path).await {
                Err(e) if !e.is_enoent() => return Err(e),
                _ => {}
            }
            let mut p = path.as_str();
            while let Some(i) = p.rfind('/') {
                p = if i == 0 { "/" } else { &p[..i] };
                if XS_KEEP.contains(&p) {
                    break;
                }
                match tx.directory(p).await {
                    Ok(children) if children.is_empty() => tx.rm(p).await?,
                    Ok(_) => break,
                    Err(e) if e.is_enoent() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    })
    .await?;
    Ok(())
}

async fn name_in_use(xs: &xenstore::Xenstore, name: &str) -> Result<Option<u32>> {
    let ids = match xs.directory("/local/domain").await {
        Ok(v) => v,
        Err(e) if e.is_enoent() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    for id in ids {
        let p = format!("/local/domain/{id}/name");
        if let Some(n) = xs.try_read(&p).await? {
            if n == name.as_bytes() {
                return Ok(id.parse().ok());
            }
        }
    }
    Ok(None)
}

fn now_string() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:02}", d.as_secs(), d.subsec_millis() / 10)
}

/// Restores a PV guest from `input`.  See the module documentation.
pub fn restore<R: Read>(input: &mut R, opts: &RestoreOptions) -> Result<Restored> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let xs = if opts.no_xenstore {
        None
    } else {
        Some(rt.block_on(xenstore::Xenstore::connect())?)
    };
    let xc = XenCtrl::open()?;
    let fm = ForeignMemory::open()?;
    let mut cleanup = Cleanup {
        xc: &xc,
        rt: &rt,
        xs: xs.as_ref(),
        domid: None,
        xs_roots: Vec::new(),
        userdata: None,
    };

    // Headers up to the libxc domain header: the config and the guest type.
    let mut reader = StreamReader::new(input, DecoderOptions::default());
    let mut config = SavedConfig::default();
    let version;
    loop {
        match reader.next_item()? {
            None => return invalid("stream ended before the libxc domain header".into()),
            Some(Item::XlHeader(h)) => {
                if let Some(text) = h.config_str().filter(|_| h.is_json()) {
                    config = SavedConfig::from_json(text).map_err(RestoreError::Config)?;
                }
            }
            Some(Item::ImageHeader(h)) => {
                if h.version != 2 && h.version != 3 {
                    return Err(RestoreError::Unsupported(format!("libxc v{}", h.version)));
                }
            }
            Some(Item::DomainHeader(h)) => {
                if h.domain_type != DomainType::X86Pv {
                    return Err(RestoreError::Unsupported(format!(
                        "{} guests (only x86 PV is restored)",
                        h.domain_type.name()
                    )));
                }
                version = reader.decoder().version();
                break;
            }
            Some(Item::LibxlRecord(LibxlRecord::LibxcContext)) | Some(Item::LibxlHeader(_)) => {}
            Some(Item::LibxlRecord(r)) => {
                return Err(RestoreError::Unsupported(format!(
                    "libxl record {} before the libxc stream",
                    r.name()
                )))
            }
            Some(Item::Record(r)) => {
                return invalid(format!("libxc record {} before the headers", r.name()))
            }
        }
    }

    let mut name = opts.name.clone().or(config.name.clone());
    if let (Some(xs), Some(n)) = (&xs, &mut name) {
        if n.is_empty() || n.contains('/') {
            return Err(RestoreError::Config(format!("bad domain name {n:?}")));
        }
        if opts.incoming && rt.block_on(name_in_use(xs, n))?.is_some() {
            *n = incoming_name(n);
        }
        if let Some(id) = rt.block_on(name_in_use(xs, n))? {
            return Err(RestoreError::Config(format!(
                "a domain named {n:?} already exists (domid {id})"
            )));
        }
    }
    // Whether the `/vm/<uuid>` entry belongs to another domain (the source
    // of a localhost migration): then it is neither written nor removed.
    let mut vm_taken = false;
    let uuid = match (&xs, opts.uuid.or(config.uuid)) {
        (Some(xs), Some(u)) => {
            let vm = format!("/vm/{}", tree::format_uuid(&u));
            if rt.block_on(xs.try_read(&vm))?.is_some() {
                if opts.incoming {
                    vm_taken = true;
                    u
                } else {
                    tree::random_uuid()
                }
            } else {
                u
            }
        }
        (None, Some(u)) => u,
        (_, None) => tree::random_uuid(),
    };
    let max_vcpus = opts.max_vcpus.or(config.max_vcpus).unwrap_or(1).max(1);
    let mem_kib = opts.memory_mib.map(|m| m * 1024);
    let max_kib = mem_kib.or(config.max_memkb);
    let target_kib = mem_kib.or(config.target_memkb).or(max_kib);

    // Create the domain as libxl does for PV.
    let mut dc = DomainConfig::pv(max_vcpus);
    dc.handle = uuid;
    let domid = xc.create_domain(&dc)?;
    trace!("created domain {domid} ({max_vcpus} vCPUs, max {max_kib:?} KiB)");
    cleanup.domid = Some(domid);
    // Xen 4.17 creates the vCPU structures here, not at createdomain:
    // without it setvcpucontext fails with EINVAL (libxl__build_pre).
    xc.set_max_vcpus(domid, max_vcpus)?;
    xc.set_address_size(domid, 64)?;
    if let Some(k) = max_kib {
        xc.set_max_mem(domid, k + MAXMEM_SLACK_KIB)?;
        xc.set_memmap_limit(domid, k)?;
    }
    let store_port = xc.evtchn_alloc_unbound(domid, 0)?;
    let console_port = xc.evtchn_alloc_unbound(domid, 0)?;
    let info = xc.domain_info(domid)?;
    trace!(
        "store port {store_port}, console port {console_port}, shared_info {:#x}",
        info.shared_info_frame
    );
    let name = name.unwrap_or_else(|| format!("restored-{domid}"));
    let start_time = now_string();
    let vm_root = format!("/vm/{}", tree::format_uuid(&uuid));
    let tree_nodes =
        |max_kib: u64, target_kib: u64, online: &[bool], store_mfn: u64, console_mfn: u64| {
            let mut nodes = tree::domain_tree(&TreeParams {
                domid,
                name: name.clone(),
                uuid,
                max_memkb: max_kib,
                target_memkb: target_kib,
                video_memkb: config.video_memkb.unwrap_or(0),
                vcpus: max_vcpus,
                online_vcpus: online.to_vec(),
                store_port,
                store_mfn,
                console_port,
                console_mfn,
                start_time: start_time.clone(),
            });
            if vm_taken {
                let sub = format!("{vm_root}/");
                nodes.retain(|n| n.path != vm_root && !n.path.starts_with(&sub));
            }
            nodes
        };
    // With the memory size known from the config, the tree is written now,
    // while a live sender is still pre-copying: only what the stream
    // decides (ring frames, online vCPUs) is left for the end, when the
    // guest is paused waiting for us.
    // libxl's record of the domain's configuration (what `xl list -l`
    // shows), removed again if the restore fails.
    let write_userdata = |max_kib: u64, target_kib: u64, cleanup: &mut Cleanup<'_>| {
        let path = std::path::Path::new(XEN_LIB_DIR).join(format!(
            "userdata-d.{domid}.{}.libxl-json",
            tree::format_uuid(&uuid)
        ));
        cleanup.userdata = Some(path.clone());
        std::fs::write(
            &path,
            config.userdata_json(&name, &uuid, max_kib, target_kib),
        )
    };
    let mut early_nodes = Vec::new();
    if let (Some(xs), Some(mk)) = (&xs, max_kib) {
        cleanup.xs_roots = tree::tree_roots(domid, &uuid);
        if vm_taken {
            cleanup.xs_roots.retain(|r| *r != vm_root);
        }
        let online = vec![true; max_vcpus as usize];
        early_nodes = tree_nodes(mk, target_kib.unwrap_or(mk), &online, 0, 0);
        trace!(
            "writing the xenstore tree early ({} nodes)",
            early_nodes.len()
        );
        rt.block_on(write_tree(xs, domid, &early_nodes))?;
        write_userdata(mk, target_kib.unwrap_or(mk), &mut cleanup)?;
    }

    let mut ctx = Ctx {
        xc: &xc,
        fm: &fm,
        domid,
        max_vcpus,
        maxmem_set: max_kib.is_some(),
        store_port,
        console_port,
        max_pfn: None,
        p2m: Vec::new(),
        types: Vec::new(),
        p2m_frames: Vec::new(),
        populated: 0,
        cpuid: None,
        msr: None,
        vcpus: (0..max_vcpus).map(|_| VcpuState::default()).collect(),
        shared_info_frame: info.shared_info_frame,
        store_mfn: 0,
        console_mfn: 0,
        online: vec![false; max_vcpus as usize],
        libxc_done: false,
    };

    while let Some(item) = reader.next_item()? {
        trace!("{}", item_name(&item));
        match item {
            Item::Record(r) => match r {
                Record::X86PvInfo(i) => {
                    if i.guest_width != 8 || i.pt_levels != 4 {
                        return Err(RestoreError::Unsupported(format!(
                            "{}-bit PV guest with {} page-table levels (only 64-bit, 4 levels)",
                            u32::from(i.guest_width) * 8,
                            i.pt_levels
                        )));
                    }
                }
                Record::X86CpuidPolicy(l) => ctx.cpuid = Some(cpuid_bytes(&l)),
                Record::X86MsrPolicy(m) => ctx.msr = Some(msr_bytes(&m)),
                Record::StaticDataEnd => ctx.static_data_end()?,
                Record::X86PvP2mFrames(f) => ctx.p2m_frames(f.start_pfn, f.end_pfn, &f.frames)?,
                Record::PageData(p) => ctx.page_data(&p)?,
                Record::X86TscInfo(t) => xc.set_tsc_info(
                    domid,
                    &TscInfo {
                        mode: t.mode,
                        khz: t.khz,
                        elapsed_nsec: t.nsec,
                        incarnation: t.incarnation,
                    },
                )?,
                Record::SharedInfo(s) => ctx.shared_info(&s)?,
                Record::X86PvVcpu(v) => ctx.vcpu(v.kind, v.vcpu_id, v.data)?,
                Record::End => ctx.complete()?,
                Record::Verify | Record::Optional { .. } => {}
                other => {
                    return Err(RestoreError::Unsupported(format!(
                        "record {} in a PV restore",
                        other.name()
                    )))
                }
            },
            Item::LibxlRecord(LibxlRecord::End) | Item::LibxlRecord(LibxlRecord::LibxcContext) => {}
            Item::LibxlRecord(r @ LibxlRecord::EmulatorXenstoreData { .. })
            | Item::LibxlRecord(r @ LibxlRecord::EmulatorContext { .. }) => {
                eprintln!(
                    "xenguest: ignoring libxl {} (PV guest, no emulator)",
                    r.name()
                );
            }
            Item::LibxlRecord(r) => {
                return Err(RestoreError::Unsupported(format!(
                    "libxl record {} (checkpointed streams are not restored)",
                    r.name()
                )))
            }
            other => return invalid(format!("unexpected {other:?} inside the stream")),
        }
    }
    if !ctx.libxc_done {
        return invalid("stream ended without the libxc END record".into());
    }
    let (store_mfn, console_mfn, populated) = (ctx.store_mfn, ctx.console_mfn, ctx.populated);
    let online = ctx.online.clone();
    let max_pfn = ctx.max_pfn.unwrap_or(0);
    // Freeing the stream's buffers and the p2m takes milliseconds under TCG
    // while the guest is paused waiting for us: another thread does it.
    let garbage = (
        reader.take_buffers(),
        std::mem::take(&mut ctx.p2m),
        std::mem::take(&mut ctx.types),
    );
    std::thread::spawn(move || drop(garbage));
    drop(ctx);

    let max_kib = max_kib.unwrap_or((max_pfn + 1) * 4);
    let target_kib = target_kib.unwrap_or(max_kib);
    if let Some(xs) = &xs {
        cleanup.xs_roots = tree::tree_roots(domid, &uuid);
        if vm_taken {
            cleanup.xs_roots.retain(|r| *r != vm_root);
        }
        let final_nodes: Vec<tree::Node> =
            tree_nodes(max_kib, target_kib, &online, store_mfn, console_mfn)
                .into_iter()
                .filter(|n| !early_nodes.contains(n))
                .collect();
        if cleanup.userdata.is_none() {
            write_userdata(max_kib, target_kib, &mut cleanup)?;
        }
        trace!(
            "writing the last {} xenstore nodes and introducing the domain",
            final_nodes.len()
        );
        rt.block_on(finish_tree_and_introduce(
            xs,
            domid,
            &final_nodes,
            store_mfn,
            store_port,
        ))?;
        trace!("introduced");
    }
    if !opts.paused {
        xc.unpause_domain(domid)?;
    }
    cleanup.domid = None;
    cleanup.xs_roots.clear();
    cleanup.userdata = None;
    trace!("restore done");
    Ok(Restored {
        domid,
        name,
        uuid: tree::format_uuid(&uuid),
        store_mfn,
        store_port,
        console_mfn,
        console_port,
        pages: populated,
        vcpus: online.iter().filter(|&&o| o).count() as u32,
        stream_version: version,
    })
}

/// Destroys a restored domain and removes what restore wrote for it
/// (xenstore tree, userdata file): the receiver's way back when a
/// migration does not complete.  The `/vm/<uuid>` entry stays while
/// another domain refers to it.
pub fn discard(domid: DomId) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let xs = rt.block_on(xenstore::Xenstore::connect())?;
    let xc = XenCtrl::open()?;
    let d = format!("/local/domain/{domid}");
    let vm = rt
        .block_on(xs.try_read(&format!("{d}/vm")))?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let shared = match &vm {
        Some(vm) => rt.block_on(vm_referenced_elsewhere(&xs, domid, vm))?,
        None => false,
    };
    xc.destroy_domain(domid)?;
    let mut roots = vec![
        d,
        format!("/libxl/{domid}"),
        format!("/local/domain/0/backend/console/{domid}"),
    ];
    if let Some(vm) = vm.filter(|v| v.starts_with("/vm/") && !shared) {
        roots.push(vm);
    }
    for r in &roots {
        rt.block_on(xs_path_cleanup(&xs, r))?;
    }
    let prefix = format!("userdata-d.{domid}.");
    if let Ok(dir) = std::fs::read_dir(XEN_LIB_DIR) {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

async fn vm_referenced_elsewhere(xs: &xenstore::Xenstore, domid: DomId, vm: &str) -> Result<bool> {
    let ids = match xs.directory("/local/domain").await {
        Ok(v) => v,
        Err(e) if e.is_enoent() => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    for id in ids.iter().filter(|id| **id != domid.to_string()) {
        if xs.try_read(&format!("/local/domain/{id}/vm")).await? == Some(vm.as_bytes().to_vec()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Renames a domain as `libxl__domain_rename` does: its xenstore `name`,
/// its `/vm` entry's name (taking the entry over if the domain that owned
/// it is gone) and the name in libxl's stored configuration.  Fails if
/// another domain has the name.
pub fn rename(domid: DomId, new_name: &str) -> Result<()> {
    if new_name.is_empty() || new_name.contains('/') {
        return Err(RestoreError::Config(format!(
            "bad domain name {new_name:?}"
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let xs = rt.block_on(xenstore::Xenstore::connect())?;
    if let Some(id) = rt.block_on(name_in_use(&xs, new_name))? {
        if id != domid {
            return Err(RestoreError::Config(format!(
                "a domain named {new_name:?} already exists (domid {id})"
            )));
        }
    }
    let d = format!("/local/domain/{domid}");
    let vm = rt
        .block_on(xs.try_read(&format!("{d}/vm")))?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .filter(|v| v.starts_with("/vm/"));
    let owned_elsewhere = match &vm {
        Some(vm) => rt.block_on(vm_referenced_elsewhere(&xs, domid, vm))?,
        None => true,
    };
    let name = new_name.to_string();
    rt.block_on(xs.transaction(|tx| {
        let (d, vm, name) = (d.clone(), vm.clone(), name.clone());
        async move {
            tx.write(&format!("{d}/name"), &name).await?;
            if let (Some(vm), false) = (vm, owned_elsewhere) {
                use xenstore::{Access, Perm};
                let perms = [Perm::new(0, Access::None), Perm::new(domid, Access::Read)];
                for p in ["", "/uuid", "/start_time", "/image", "/image/ostype"] {
                    let path = format!("{vm}{p}");
                    if tx.try_read(&path).await?.is_some() {
                        tx.set_perms(&path, &perms).await?;
                    }
                }
                let np = format!("{vm}/name");
                tx.write(&np, &name).await?;
                tx.set_perms(&np, &perms).await?;
            }
            Ok(())
        }
    }))?;
    // libxl's stored config carries the name too (`xl list -l`).
    let prefix = format!("userdata-d.{domid}.");
    if let Ok(dir) = std::fs::read_dir(XEN_LIB_DIR) {
        for e in dir.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if f.starts_with(&prefix) && f.ends_with(".libxl-json") {
                let text = std::fs::read_to_string(e.path())?;
                if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if v["c_info"].is_object() {
                        v["c_info"]["name"] = serde_json::Value::from(new_name);
                        let tmp = e.path().with_extension("libxl-json.tmp");
                        std::fs::write(&tmp, serde_json::to_string_pretty(&v).unwrap_or(text))?;
                        std::fs::rename(&tmp, e.path())?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn item_name(i: &Item) -> String {
    match i {
        Item::Record(Record::PageData(p)) => format!("PAGE_DATA {} pfns", p.entries.len()),
        Item::Record(r) => r.name().to_string(),
        Item::LibxlRecord(r) => format!("libxl {}", r.name()),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}

/// A node's permission list for domain `domid`.
fn node_perms(domid: DomId, p: Perms) -> Vec<xenstore::Perm> {
    use xenstore::{Access, Perm};
    match p {
        Perms::Dom0Only => vec![Perm::new(0, Access::None)],
        Perms::GuestRead => vec![Perm::new(0, Access::None), Perm::new(domid, Access::Read)],
        Perms::GuestOwned => vec![Perm::new(domid, Access::None)],
        Perms::GuestOwnedDom0Read => {
            vec![Perm::new(domid, Access::None), Perm::new(0, Access::Read)]
        }
    }
}

async fn write_tree(xs: &xenstore::Xenstore, domid: DomId, nodes: &[tree::Node]) -> Result<()> {
    let perms = |p: Perms| node_perms(domid, p);
    let nodes = nodes.to_vec();
    xs.transaction(|tx| {
        let nodes = nodes.clone();
        async move {
            // All requests go out at once (xenstored answers them in order
            // on this connection): one round trip instead of two per node,
            // which is most of a restore's time in xenstore while the
            // guest waits.
            let each = nodes.iter().map(|n| {
                let tx = &tx;
                async move {
                    tx.write(&n.path, &n.value).await?;
                    tx.set_perms(&n.path, &perms(n.perms)).await
                }
            });
            futures_util::future::try_join_all(each).await?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}

/// Writes the nodes only the stream could decide (ring frames, online
/// vCPUs) and introduces the domain, all requests in flight at once: the
/// guest waits for this. No transaction: nothing reads a domain's tree
/// before it is introduced, and xenstored handles one connection's requests
/// in order, so each node's permissions follow its value and the
/// introduction (which makes xenconsoled read the console's ring) comes
/// last.
async fn finish_tree_and_introduce(
    xs: &xenstore::Xenstore,
    domid: DomId,
    nodes: &[tree::Node],
    store_mfn: u64,
    store_port: u32,
) -> Result<()> {
    type Step<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = xenstore::Result<()>> + 'a>>;
    let perms: Vec<_> = nodes.iter().map(|n| node_perms(domid, n.perms)).collect();
    let mut steps: Vec<Step<'_>> = Vec::new();
    for (n, p) in nodes.iter().zip(&perms) {
        steps.push(Box::pin(xs.write(&n.path, &n.value)));
        steps.push(Box::pin(xs.set_perms(&n.path, p)));
    }
    steps.push(Box::pin(xs.introduce_domain(domid, store_mfn, store_port)));
    futures_util::future::try_join_all(steps).await?;
    Ok(())
}

#[cfg(test)]
mod cleanup_tests {
    use super::*;
    use xenstore::fake::FakeXenstored;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn path_cleanup_removes_parents_left_empty_only() {
        block_on(path_cleanup());
    }

    #[test]
    fn the_tree_is_written_whole_with_its_permissions() {
        block_on(async {
            let fake = FakeXenstored::new();
            let xs = fake.connect();
            let node = |path: &str, value: &str, perms| tree::Node {
                path: path.into(),
                value: value.into(),
                perms,
            };
            // Children before parents and many nodes: all requests are in
            // flight together.
            let mut nodes = vec![
                node("/local/domain/9/device/vif/0/state", "1", Perms::GuestOwned),
                node("/local/domain/9", "", Perms::GuestRead),
                node("/local/domain/9/name", "g", Perms::Dom0Only),
            ];
            for i in 0..40 {
                nodes.push(node(
                    &format!("/local/domain/9/data/k{i}"),
                    &i.to_string(),
                    Perms::GuestOwnedDom0Read,
                ));
            }
            write_tree(&xs, 9, &nodes).await.unwrap();
            for n in &nodes {
                assert_eq!(
                    xs.read_string(&n.path).await.unwrap(),
                    n.value,
                    "{}",
                    n.path
                );
            }
            use xenstore::{Access, Perm};
            assert_eq!(
                xs.get_perms("/local/domain/9").await.unwrap(),
                vec![Perm::new(0, Access::None), Perm::new(9, Access::Read)]
            );
            assert_eq!(
                xs.get_perms("/local/domain/9/device/vif/0/state")
                    .await
                    .unwrap(),
                vec![Perm::new(9, Access::None)]
            );
            assert_eq!(
                xs.get_perms("/local/domain/9/data/k39").await.unwrap(),
                vec![Perm::new(9, Access::None), Perm::new(0, Access::Read)]
            );
        });
    }

    #[test]
    fn the_last_nodes_land_before_the_introduction() {
        block_on(async {
            let fake = FakeXenstored::new();
            let xs = fake.connect();
            let node = |path: &str, value: &str| tree::Node {
                path: path.into(),
                value: value.into(),
                perms: Perms::GuestRead,
            };
            write_tree(&xs, 9, &[node("/local/domain/9/console/ring-ref", "0")])
                .await
                .unwrap();
            let last = [
                node("/local/domain/9/console/ring-ref", "4660"),
                node("/local/domain/9/store/ring-ref", "4661"),
            ];
            assert!(!xs.is_domain_introduced(9).await.unwrap());
            finish_tree_and_introduce(&xs, 9, &last, 4661, 1)
                .await
                .unwrap();
            assert!(xs.is_domain_introduced(9).await.unwrap());
            for n in &last {
                assert_eq!(xs.read_string(&n.path).await.unwrap(), n.value);
                assert_eq!(
                    xs.get_perms(&n.path).await.unwrap(),
                    node_perms(9, Perms::GuestRead)
                );
            }
        });
    }

    async fn path_cleanup() {
        let fake = FakeXenstored::new();
        let xs = fake.connect();
        xs.write("/local/domain/0/name", "Domain-0").await.unwrap();
        xs.write("/local/domain/0/backend/console/7/0/state", "1")
            .await
            .unwrap();
        xs.write("/local/domain/0/backend/vbd/3/51712/state", "4")
            .await
            .unwrap();
        xs.write("/local/domain/7/name", "g").await.unwrap();
        xs.write("/vm/u7/name", "g").await.unwrap();

        xs_path_cleanup(&xs, "/local/domain/0/backend/console/7")
            .await
            .unwrap();
        // console/ went (empty), backend/ stays (vbd is in it).
        assert!(xs
            .directory("/local/domain/0/backend/console")
            .await
            .unwrap_err()
            .is_enoent());
        assert_eq!(
            xs.directory("/local/domain/0/backend").await.unwrap(),
            vec!["vbd"]
        );

        xs_path_cleanup(&xs, "/local/domain/7").await.unwrap();
        xs_path_cleanup(&xs, "/vm/u7").await.unwrap();
        // Roots are kept even when empty; dom0 is untouched.
        assert_eq!(xs.directory("/local/domain").await.unwrap(), vec!["0"]);
        assert!(xs.directory("/vm").await.unwrap().is_empty());
        // Already gone: not an error.
        xs_path_cleanup(&xs, "/libxl/7").await.unwrap();
        xs_path_cleanup(&xs, "/local/domain/0/backend/console/7")
            .await
            .unwrap();
    }
}
