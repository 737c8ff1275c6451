//! Saving an x86-64 PV guest as a libxc migration stream (v3), optionally
//! wrapped for libxl and `xl save` files; non-live or live (pre-copy with
//! log-dirty tracking).
//!
//! The record order is the reference's (libxenguest `xg_sr_save*.c`):
//! image and domain headers; X86_PV_INFO, X86_CPUID_POLICY, X86_MSR_POLICY
//! (if any), STATIC_DATA_END; X86_PV_P2M_FRAMES; PAGE_DATA batches of up to
//! 1024 pfns (all pfns, then in a live save the dirty ones each round, then
//! the final pass); X86_TSC_INFO, SHARED_INFO; per online vCPU BASIC,
//! EXTENDED, XSAVE (if any), MSRS (if any); END.
//!
//! Guarantees: log-dirty mode is always turned off again, also on error;
//! if anything fails after the guest was suspended, it is resumed in place
//! (cooperative suspend-cancel) before the error is returned.

mod policy;
mod vcpu;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use thiserror::Error;
use xenctrl::{ForeignMemory, Mapping, Prot, ShutdownReason, XenCtrl};

pub use policy::{Bandwidth, LivePolicy, StopReason};
pub use vcpu::normalise_basic;

use crate::stream::libxc::{encode_record_raw, rec, PAGE_SIZE};
use crate::stream::pte::{self, PtLevel, PteError};
use crate::stream::{
    DomainHeader, ImageHeader, LibxlHeader, LibxlRecord, PageEntry, PageType, Record, StreamError,
    StreamWriter, X86PvInfo, X86TscInfo, XlHeader,
};

/// Most pfns in one PAGE_DATA record (as the reference).
pub const BATCH: usize = 1024;

/// What to do with the guest once the stream is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AfterSave {
    /// Destroy it, as `xl save` does (and clean its xenstore directories).
    #[default]
    Destroy,
    /// Resume it in place (`xc_domain_resume(fast)`), as a checkpoint.
    Resume,
    /// Leave it suspended (the caller decides, e.g. a migration sender).
    LeaveSuspended,
}

/// The container around the libxc stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Wrapper {
    /// The bare libxc stream.
    #[default]
    Libxc,
    /// libxl's stream: LibxlFmt header, LIBXC_CONTEXT, libxc stream, END.
    Libxl,
    /// An `xl save` file: xl header with this JSON domain configuration
    /// (a `libxl_domain_config`), then the libxl stream.
    Xl { config_json: String },
}

/// Options of [`save`].
#[derive(Debug, Clone, PartialEq)]
pub struct SaveOptions {
    /// Pre-copy with log-dirty tracking while the guest runs.
    pub live: bool,
    /// What happens to the guest after a successful save.
    pub after: AfterSave,
    /// Output container.
    pub wrapper: Wrapper,
    /// How long the guest may take to suspend (default 60 s).
    pub suspend_timeout: Duration,
    /// Live phase tuning.
    pub policy: LivePolicy,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            live: false,
            after: AfterSave::Destroy,
            wrapper: Wrapper::Libxc,
            suspend_timeout: Duration::from_secs(60),
            policy: LivePolicy::default(),
        }
    }
}

/// One pre-copy round, as reported to the progress callback.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundReport {
    /// 1-based; round 1 is the full first pass.
    pub round: u32,
    /// Pages (with data) sent this round.
    pub pages_sent: u64,
    /// Pages deferred this round (page tables mid-update).
    pub deferred: u64,
    /// Pages dirtied during this round (to send next).
    pub dirty_after: u64,
    /// Stream bytes written so far.
    pub bytes_total: u64,
    /// Duration of the round.
    pub duration: Duration,
    /// Bandwidth measured so far, bytes/s.
    pub bandwidth: f64,
    /// Estimated time to send `dirty_after` pages.
    pub estimated_downtime: Option<Duration>,
}

/// Progress of a save.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Log-dirty tracking on; the first full pass starts.
    LiveStarted { p2m_size: u64 },
    /// A pre-copy round finished.
    Round(RoundReport),
    /// Pre-copy ended.
    LiveStopped(StopReason),
    /// Asking the guest to suspend.
    Suspending,
    /// The guest is suspended (shutdown reason suspend).
    Suspended { took: Duration },
    /// Final (paused) memory pass done.
    FinalPass { pages_sent: u64, bytes_total: u64 },
    /// The stream is complete.
    Complete { bytes_total: u64 },
}

/// Figures of a finished save.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SaveStats {
    /// Bytes written (including wrappers).
    pub bytes: u64,
    /// pfns covered by the p2m (max_pfn + 1).
    pub p2m_size: u64,
    /// Pre-copy rounds (0 for a non-live save).
    pub rounds: u32,
    /// Dirty pages left after each pre-copy round.
    pub dirty_per_round: Vec<u64>,
    /// Why pre-copy stopped (None for a non-live save).
    pub stop_reason: Option<StopReason>,
    /// Pages with data written in total.
    pub pages_sent: u64,
    /// Pages with data written while the guest was suspended.
    pub final_pages: u64,
    /// Zero pages never sent before, sent without data (XALLOC).
    pub zero_pages: u64,
    /// From the suspend request to the end of the stream.
    pub suspended_for: Duration,
    /// The whole save.
    pub total: Duration,
}

/// Why a save failed.
#[derive(Debug, Error)]
pub enum SaveError {
    #[error("domain {0} does not exist")]
    NoSuchDomain(u32),
    #[error("domain {domid} is not a PV guest{what}", what = if *.hvm { " (HVM)" } else { "" })]
    NotPv { domid: u32, hvm: bool },
    #[error("domain {domid} is a {bits}-bit PV guest: only 64-bit PV guests can be saved")]
    Not64Bit { domid: u32, bits: u32 },
    #[error("domain {domid}: {what}")]
    BadState { domid: u32, what: String },
    #[error("domain {domid}: guest did not suspend: {what}")]
    Suspend { domid: u32, what: String },
    #[error("domain {domid}: pfn {pfn:#x}: {err}")]
    PageTable { domid: u32, pfn: u64, err: PteError },
    #[error("domain {domid}: bad guest memory layout: {what}")]
    Layout { domid: u32, what: String },
    #[error("domain {domid}: p2m changed during the live phase (generation {from} -> {to})")]
    P2mChanged { domid: u32, from: u64, to: u64 },
    #[error("writing the stream: {0}")]
    Write(#[from] StreamError),
    #[error(transparent)]
    Xen(#[from] xenctrl::Error),
    #[error(transparent)]
    Xenstore(#[from] xenstore::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A save error after which resuming the guest failed too.
    #[error("{error}; and resuming the guest failed: {resume}")]
    ResumeFailed {
        error: Box<SaveError>,
        resume: Box<SaveError>,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, SaveError>;

/// Extract the domain configuration from `xl list -l` style JSON: either
/// an array of `{"domid":..,"config":{..}}` (first element), an object
/// with a `config` member, or a bare `libxl_domain_config` object.
/// Returns it re-serialised, pretty-printed as xl does.
pub fn domain_config_json(text: &str) -> std::result::Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("domain config is not JSON: {e}"))?;
    let obj = match &v {
        serde_json::Value::Array(a) => a.first().ok_or("domain config: empty JSON array")?.clone(),
        other => other.clone(),
    };
    let cfg = match obj.get("config") {
        Some(c) if obj.get("c_info").is_none() => c.clone(),
        _ => obj,
    };
    if cfg.get("c_info").is_none() {
        return Err("domain config has no c_info: not a libxl_domain_config".into());
    }
    serde_json::to_string_pretty(&cfg).map_err(|e| e.to_string())
}

/// With `XENGUEST_TRACE` set in the environment, the steps of a save are
/// logged to stderr (for debugging in a dom0).
fn trace(what: std::fmt::Arguments<'_>) {
    crate::restore::trace_step("xenguest trace:", what);
}

/// Xen's version for the domain header, from `/sys/hypervisor/version`
/// ((0, 0) if unavailable: the field is informational).
fn xen_version() -> (u32, u32) {
    let rd = |f: &str| {
        std::fs::read_to_string(format!("/sys/hypervisor/version/{f}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    match (rd("major"), rd("minor")) {
        (Some(a), Some(b)) => (a, b),
        _ => (0, 0),
    }
}

/// Saves 64-bit PV domain `domid` to `out` (see the module docs).
///
/// `progress` is called at each step of the save (rounds, suspend, final
/// pass).  On success the guest is destroyed, resumed or left suspended as
/// `opts.after` says; on failure it keeps running.
pub fn save<W: Write>(
    domid: u32,
    out: &mut W,
    opts: &SaveOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<SaveStats> {
    let xc = XenCtrl::open()?;
    let fm = ForeignMemory::open()?;
    trace(format_args!("opened xenctrl and foreignmemory"));
    let info = match xc.domain_info(domid) {
        Ok(i) => i,
        Err(e) if e.errno() == Some(3 /* ESRCH */) => return Err(SaveError::NoSuchDomain(domid)),
        Err(e) => return Err(e.into()),
    };
    if domid == 0 {
        return Err(SaveError::BadState {
            domid,
            what: "dom0 cannot be saved".into(),
        });
    }
    if info.hvm() {
        return Err(SaveError::NotPv { domid, hvm: true });
    }
    let bits = xc.address_size(domid)?;
    if bits != 64 {
        return Err(SaveError::Not64Bit { domid, bits });
    }
    // Before suspending: a guest that has not published its p2m (still
    // booting, or an empty domain) cannot be saved.
    if fm
        .map_shared_info(domid, info.shared_info_frame, Prot::Read)?
        .arch()
        .max_pfn
        == 0
    {
        return Err(SaveError::Layout {
            domid,
            what: "no p2m published in shared_info (guest still booting, or no kernel)".into(),
        });
    }
    if info.dying() {
        return Err(SaveError::BadState {
            domid,
            what: "domain is dying".into(),
        });
    }
    match info.shutdown() {
        None | Some(ShutdownReason::Suspend) => {}
        Some(r) => {
            return Err(SaveError::BadState {
                domid,
                what: format!("domain has shut down ({r:?})"),
            })
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    trace(format_args!("runtime built"));
    let xs = rt.block_on(xenstore::Xenstore::connect())?;
    trace(format_args!("xenstore connected"));
    let mut st = SaveState {
        xc: &xc,
        fm: &fm,
        rt: &rt,
        xs: &xs,
        domid,
        opts,
        suspended: info.shutdown() == Some(ShutdownReason::Suspend),
        we_suspended: false,
        logdirty: false,
        suspend_started: None,
        zero_pages: std::cell::Cell::new(0),
    };
    let t0 = Instant::now();
    let r = st.run(out, &mut progress, t0);
    if st.logdirty {
        // Always: also on success (the guest is suspended then).
        if let Err(e) = xc.disable_shadow(domid) {
            if r.is_ok() {
                return Err(e.into());
            }
        }
    }
    match r {
        Ok(stats) => {
            match opts.after {
                AfterSave::Resume => st.resume()?,
                AfterSave::Destroy => st.destroy()?,
                AfterSave::LeaveSuspended => {}
            }
            Ok(stats)
        }
        Err(e) => {
            if st.we_suspended {
                if let Err(re) = st.resume() {
                    return Err(SaveError::ResumeFailed {
                        error: Box::new(e),
                        resume: Box::new(re),
                    });
                }
            }
            Err(e)
        }
    }
}

struct SaveState<'a> {
    xc: &'a XenCtrl,
    fm: &'a ForeignMemory,
    rt: &'a tokio::runtime::Runtime,
    xs: &'a xenstore::Xenstore,
    domid: u32,
    opts: &'a SaveOptions,
    suspended: bool,
    we_suspended: bool,
    logdirty: bool,
    suspend_started: Option<Instant>,
    /// Zero pages sent as XALLOC (no data).
    zero_pages: std::cell::Cell<u64>,
}

/// Everything mapped from the guest: m2p, shared_info, p2m.
struct GuestMem<'a> {
    domid: u32,
    m2p: xenctrl::M2p<'a>,
    shinfo: xenctrl::SharedInfo<'a>,
    /// Highest pfn (inclusive).
    max_pfn: u64,
    /// The p2m leaf frames mapped read-only.
    p2m_map: Mapping<'a>,
    /// pfns of the p2m leaf frames (X86_PV_P2M_FRAMES).
    p2m_pfns: Vec<u64>,
    /// Snapshot of the p2m: pfn -> mfn.
    p2m: Vec<u64>,
    /// p2m_generation when mapped (linear p2m only).
    generation: Option<u64>,
    /// pfns whose data went into the stream at least once.
    sent_data: Vec<bool>,
}

impl<'a> SaveState<'a> {
    fn bad(&self, what: impl Into<String>) -> SaveError {
        SaveError::Layout {
            domid: self.domid,
            what: what.into(),
        }
    }

    fn run<W: Write>(
        &mut self,
        out: &mut W,
        progress: &mut dyn FnMut(&Progress),
        t0: Instant,
    ) -> Result<SaveStats> {
        let domid = self.domid;
        let mut stats = SaveStats::default();
        if !self.opts.live {
            self.suspend(progress)?;
        }
        let mut mem = self.map_guest()?;
        trace(format_args!(
            "guest mapped: max_pfn {:#x}, {} p2m frames",
            mem.max_pfn,
            mem.p2m_pfns.len()
        ));
        stats.p2m_size = mem.max_pfn + 1;
        let mut w = StreamWriter::new(out);

        // Wrappers, headers, static data.
        match &self.opts.wrapper {
            Wrapper::Libxc => {}
            Wrapper::Libxl => {
                w.write_libxl_header(&LibxlHeader::default())?;
                w.write_libxl_record(&LibxlRecord::LibxcContext)?;
            }
            Wrapper::Xl { config_json } => {
                w.write_xl_header(&XlHeader::with_json_config(config_json))?;
                w.write_libxl_header(&LibxlHeader::default())?;
                w.write_libxl_record(&LibxlRecord::LibxcContext)?;
            }
        }
        let (maj, min) = xen_version();
        w.write_libxc_headers(&ImageHeader::default(), &DomainHeader::x86_pv(maj, min))?;
        w.write_record(&Record::X86PvInfo(X86PvInfo::X86_64))?;
        let pol = self.xc.domain_cpu_policy(domid)?;
        write_raw_record(&mut w, rec::X86_CPUID_POLICY, &pol.cpuid_bytes())?;
        let msr = pol.msr_bytes();
        if !msr.is_empty() {
            write_raw_record(&mut w, rec::X86_MSR_POLICY, &msr)?;
        }
        w.write_record(&Record::StaticDataEnd)?;
        trace(format_args!("static data written"));
        let mut body = Vec::with_capacity(8 + mem.p2m_pfns.len() * 8);
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&(mem.max_pfn as u32).to_le_bytes());
        for p in &mem.p2m_pfns {
            body.extend_from_slice(&p.to_le_bytes());
        }
        write_raw_record(&mut w, rec::X86_PV_P2M_FRAMES, &body)?;

        let mut deferred = BTreeSet::new();
        let all: Vec<u64> = (0..=mem.max_pfn).collect();
        if self.opts.live {
            self.live_phase(&mut w, &mut mem, &all, &mut deferred, &mut stats, progress)?;
            self.suspend(progress)?;
            // Pages dirtied since the last round, plus the deferred ones.
            let mut bm = self.xc.dirty_bitmap(mem.max_pfn + 1)?;
            self.xc.logdirty_clean(domid, &mut bm, true)?;
            crate::pfnlog::log(format_args!("final dirty"), &bm.dirty_pfns());
            crate::pfnlog::log(
                format_args!("final deferred"),
                &deferred.iter().copied().collect::<Vec<_>>(),
            );
            let mut pfns: BTreeSet<u64> = bm.dirty_pfns().into_iter().collect();
            pfns.extend(std::mem::take(&mut deferred));
            let pfns: Vec<u64> = pfns.into_iter().collect();
            mem.refresh_p2m()?;
            trace(format_args!("final pass: {} pages", pfns.len()));
            let (sent, _) = self.send_pages(&mut w, &mut mem, &pfns, false, &mut deferred)?;
            trace(format_args!("final pass sent"));
            stats.final_pages = sent;
            stats.pages_sent += sent;
            if crate::pfnlog::enabled() {
                // Debug: any data page that changed since it was last sent
                // changed without a dirty bit.
                self.check_sent(&mem);
            }
        } else {
            let (sent, _) = self.send_pages(&mut w, &mut mem, &all, false, &mut deferred)?;
            stats.final_pages = sent;
            stats.pages_sent += sent;
        }
        progress(&Progress::FinalPass {
            pages_sent: stats.final_pages,
            bytes_total: w.written(),
        });

        // End of checkpoint: TSC, shared_info, vCPUs.
        let t = self.xc.tsc_info(domid)?;
        w.write_record(&Record::X86TscInfo(X86TscInfo {
            mode: t.mode,
            khz: t.khz,
            nsec: t.elapsed_nsec,
            incarnation: t.incarnation,
        }))?;
        w.write_record(&Record::SharedInfo(mem.shinfo.to_bytes()))?;
        self.write_vcpus(&mut w, &mem)?;
        w.write_record(&Record::End)?;
        trace(format_args!("END written"));
        if !matches!(self.opts.wrapper, Wrapper::Libxc) {
            w.write_libxl_record(&LibxlRecord::End)?;
        }
        w.flush()?;
        stats.bytes = w.written();
        stats.total = t0.elapsed();
        stats.zero_pages = self.zero_pages.get();
        stats.suspended_for = self
            .suspend_started
            .map(|s| s.elapsed())
            .unwrap_or_default();
        progress(&Progress::Complete {
            bytes_total: stats.bytes,
        });
        Ok(stats)
    }

    fn live_phase<W: Write>(
        &mut self,
        w: &mut StreamWriter<&mut W>,
        mem: &mut GuestMem<'_>,
        all: &[u64],
        deferred: &mut BTreeSet<u64>,
        stats: &mut SaveStats,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<()> {
        let domid = self.domid;
        if let Err(e) = self.xc.enable_logdirty(domid) {
            // Left on by an earlier, crashed save? Turn it off and retry.
            self.xc.disable_shadow(domid).map_err(|_| e)?;
            self.xc.enable_logdirty(domid)?;
        }
        self.logdirty = true;
        trace(format_args!("log-dirty on"));
        progress(&Progress::LiveStarted {
            p2m_size: mem.max_pfn + 1,
        });
        let ram = (mem.p2m.iter().filter(|&&m| m != u64::MAX).count() as u64) * PAGE_SIZE as u64;
        let mut bm = self.xc.dirty_bitmap(mem.max_pfn + 1)?;
        let mut bw = Bandwidth::default();
        let mut to_send: Vec<u64> = all.to_vec();
        let mut round = 0u32;
        loop {
            round += 1;
            let t = Instant::now();
            let b0 = w.written();
            mem.check_generation()?;
            mem.refresh_p2m()?;
            // Deferred pages get another try each round.
            let mut pfns: BTreeSet<u64> = to_send.iter().copied().collect();
            pfns.extend(std::mem::take(deferred));
            let pfns: Vec<u64> = pfns.into_iter().collect();
            let (sent, nd) = self.send_pages(w, mem, &pfns, true, deferred)?;
            stats.pages_sent += sent;
            let dt = t.elapsed();
            bw.add(w.written() - b0, dt);
            self.xc.logdirty_clean(domid, &mut bm, false)?;
            to_send = bm.dirty_pfns();
            crate::pfnlog::log(format_args!("round {round} dirty"), &to_send);
            let dirty = to_send.len() as u64 + deferred.len() as u64;
            stats.rounds = round;
            stats.dirty_per_round.push(dirty);
            progress(&Progress::Round(RoundReport {
                round,
                pages_sent: sent,
                deferred: nd,
                dirty_after: dirty,
                bytes_total: w.written(),
                duration: dt,
                bandwidth: bw.bytes_per_sec().unwrap_or(0.0),
                estimated_downtime: bw.estimate(dirty),
            }));
            let prev = stats.dirty_per_round.iter().rev().nth(1).copied();
            if let Some(r) = self
                .opts
                .policy
                .decide(round, dirty, prev, &bw, w.written(), ram)
            {
                stats.stop_reason = Some(r);
                progress(&Progress::LiveStopped(r));
                // The final pass sends what is dirty then (CLEAN|FINAL
                // returns everything dirtied since this CLEAN), and the
                // pages of this last bitmap.
                deferred.extend(to_send);
                return Ok(());
            }
        }
    }

    /// Sends `pfns` in batches; returns (pages with data sent, pages deferred).
    fn send_pages<W: Write>(
        &self,
        w: &mut StreamWriter<&mut W>,
        mem: &mut GuestMem<'_>,
        pfns: &[u64],
        live: bool,
        deferred: &mut BTreeSet<u64>,
    ) -> Result<(u64, u64)> {
        let mut sent = 0;
        let mut nd = 0;
        let mut entries = Vec::with_capacity(BATCH);
        let mut data = Vec::with_capacity(BATCH * PAGE_SIZE);
        let mut page = [0u8; PAGE_SIZE];
        for chunk in pfns.chunks(BATCH) {
            entries.clear();
            data.clear();
            let mfns: Vec<u64> = chunk.iter().map(|&p| mem.p2m[p as usize]).collect();
            let mut types = vec![PageType::XTab; chunk.len()];
            let valid: Vec<usize> = (0..chunk.len())
                .filter(|&i| mfns[i] <= mem.m2p.max_mfn())
                .collect();
            if !valid.is_empty() {
                let q: Vec<u64> = valid.iter().map(|&i| mfns[i]).collect();
                let t = self.xc.pfn_types(self.domid, &q)?;
                for (&i, t) in valid.iter().zip(t) {
                    types[i] = PageType::from_bits(t.0 as u8).ok_or_else(|| {
                        self.bad(format!("pfn {:#x}: unknown page type {:#x}", chunk[i], t.0))
                    })?;
                }
            }
            let with_data: Vec<usize> = (0..chunk.len()).filter(|&i| types[i].has_data()).collect();
            let map = if with_data.is_empty() {
                None
            } else {
                let f: Vec<u64> = with_data.iter().map(|&i| mfns[i]).collect();
                Some(self.fm.map_batch(self.domid, Prot::Read, &f)?)
            };
            let mut k = 0;
            for i in 0..chunk.len() {
                let pfn = chunk[i];
                if !types[i].has_data() {
                    entries.push(PageEntry::new(pfn, types[i]));
                    continue;
                }
                let map = map.as_ref().expect("mapped");
                if let Some(e) = map.error(k) {
                    return Err(self.bad(format!(
                        "mapping pfn {pfn:#x} (mfn {:#x}) failed: {e}",
                        mfns[i]
                    )));
                }
                map.read_page(k, &mut page)?;
                k += 1;
                if types[i].table_level().is_none() {
                    crate::pfnlog::record(pfn, &page);
                } else {
                    crate::pfnlog::forget(pfn);
                }
                if let Some(l) = types[i].table_level().and_then(PtLevel::from_level) {
                    match pte::normalise_page(&mut page, l, live, |m| mem.mfn_to_pfn(m)) {
                        Ok(()) => {}
                        Err(e) if e.is_deferrable() => {
                            deferred.insert(pfn);
                            nd += 1;
                            continue;
                        }
                        Err(err) => {
                            return Err(SaveError::PageTable {
                                domid: self.domid,
                                pfn,
                                err,
                            })
                        }
                    }
                }
                if types[i] == PageType::NoTab
                    && !mem.sent_data[pfn as usize]
                    && page.iter().all(|&b| b == 0)
                {
                    // A zero page never sent before: XALLOC (populate, no
                    // data) leaves it zero at any receiver, ours or the
                    // reference's, since Xen gives guests scrubbed pages.
                    // Once data went, zeros must be sent as data.
                    entries.push(PageEntry::new(pfn, PageType::XAlloc));
                    self.zero_pages.set(self.zero_pages.get() + 1);
                    crate::pfnlog::forget(pfn);
                    continue;
                }
                mem.sent_data[pfn as usize] = true;
                entries.push(PageEntry::new(pfn, types[i]));
                data.extend_from_slice(&page);
                sent += 1;
            }
            if !entries.is_empty() {
                w.write_page_data(&entries, &data)?;
            }
            if crate::pfnlog::enabled() {
                let with: Vec<u64> = entries
                    .iter()
                    .filter(|e| e.ptype.has_data())
                    .map(|e| e.pfn)
                    .collect();
                crate::pfnlog::log(format_args!("send live={live} data"), &with);
                let without: Vec<u64> = entries
                    .iter()
                    .filter(|e| !e.ptype.has_data())
                    .map(|e| e.pfn)
                    .collect();
                if !without.is_empty() {
                    crate::pfnlog::log(format_args!("send live={live} nodata"), &without);
                }
            }
        }
        Ok((sent, nd))
    }

    /// Debug (`XENGUEST_PFN_LOG`): compares the suspended guest's data
    /// pages with what was last sent of each.
    fn check_sent(&self, mem: &GuestMem<'_>) {
        crate::pfnlog::check("sender-final", |pfns| {
            let mfns: Vec<u64> = pfns.iter().map(|&p| mem.p2m[p as usize]).collect();
            let types = self.xc.pfn_types(self.domid, &mfns).unwrap_or_default();
            let Ok(map) = self.fm.map_batch(self.domid, Prot::Read, &mfns) else {
                return vec![None; pfns.len()];
            };
            (0..pfns.len())
                .map(|i| {
                    let t = PageType::from_bits(types.get(i)?.0 as u8)?;
                    if t.table_level().is_some() || !t.has_data() {
                        return None;
                    }
                    let mut page = [0u8; PAGE_SIZE];
                    map.read_page(i, &mut page).ok()?;
                    Some(page.to_vec())
                })
                .collect()
        });
    }

    fn write_vcpus<W: Write>(
        &self,
        w: &mut StreamWriter<&mut W>,
        mem: &GuestMem<'_>,
    ) -> Result<()> {
        let domid = self.domid;
        let info = self.xc.domain_info(domid)?;
        for id in 0..=info.max_vcpu_id {
            if !self.xc.vcpu_info(domid, id)?.online {
                continue;
            }
            let mut ctx = self.xc.vcpu_context(domid, id)?.as_bytes().to_vec();
            normalise_basic(&mut ctx, id, |m| mem.mfn_to_pfn(m)).map_err(|what| self.bad(what))?;
            write_vcpu(w, rec::X86_PV_VCPU_BASIC, id, &ctx)?;
            let ext = self.xc.ext_vcpu_context(domid, id)?;
            if !ext.is_empty() {
                write_vcpu(w, rec::X86_PV_VCPU_EXTENDED, id, &ext)?;
            }
            if let Some(x) = self.xc.vcpu_xsave(domid, id)? {
                if !x.data.is_empty() {
                    write_vcpu(w, rec::X86_PV_VCPU_XSAVE, id, &x.data)?;
                }
            }
            let msrs = self.xc.vcpu_msrs(domid, id)?;
            if !msrs.is_empty() {
                write_vcpu(
                    w,
                    rec::X86_PV_VCPU_MSRS,
                    id,
                    &xenctrl::VcpuMsr::to_bytes(&msrs),
                )?;
            }
        }
        Ok(())
    }

    /// Maps the m2p, shared_info and the guest's p2m.
    fn map_guest(&self) -> Result<GuestMem<'a>> {
        let domid = self.domid;
        let info = self.xc.domain_info(domid)?;
        let (xc, fm): (&'a XenCtrl, &'a ForeignMemory) = (self.xc, self.fm);
        let m2p = xc.map_m2p()?;
        trace(format_args!("m2p mapped: max_mfn {:#x}", m2p.max_mfn()));
        let shinfo = fm.map_shared_info(domid, info.shared_info_frame, Prot::Read)?;
        trace(format_args!("shared_info mapped"));
        let arch = shinfo.arch();
        if arch.max_pfn == 0 {
            return Err(self.bad("shared_info max_pfn is 0 (guest has not set up its p2m)"));
        }
        let max_pfn = arch.max_pfn - 1;
        let n_frames = (max_pfn / 512 + 1) as usize;
        let max_mfn = m2p.max_mfn();
        let (leaves, generation) = if arch.p2m_cr3 != 0 {
            (
                self.p2m_list_leaves(arch.p2m_cr3 >> 12, arch.p2m_vaddr, n_frames, max_mfn)?,
                Some(arch.p2m_generation),
            )
        } else {
            (
                self.p2m_tree_leaves(arch.pfn_to_mfn_frame_list_list, n_frames, max_mfn)?,
                None,
            )
        };
        let p2m_map = fm.map(domid, Prot::Read, &leaves)?;
        trace(format_args!("p2m leaves mapped: {}", leaves.len()));
        let mut mem = GuestMem {
            domid,
            m2p,
            shinfo,
            max_pfn,
            p2m_map,
            p2m_pfns: Vec::new(),
            p2m: Vec::new(),
            generation,
            sent_data: vec![false; max_pfn as usize + 1],
        };
        mem.refresh_p2m()?;
        let mut pfns = Vec::with_capacity(leaves.len());
        for (i, &mfn) in leaves.iter().enumerate() {
            pfns.push(mem.mfn_to_pfn(mfn).ok_or_else(|| {
                self.bad(format!("p2m frame {i} (mfn {mfn:#x}) not in the physmap"))
            })?);
        }
        mem.p2m_pfns = pfns;
        Ok(mem)
    }

    fn read_table(&self, mfn: u64) -> Result<Vec<u64>> {
        let m = self.fm.map(self.domid, Prot::Read, &[mfn])?;
        let mut b = vec![0u8; PAGE_SIZE];
        m.read(0, &mut b)?;
        Ok(b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    /// mfns of the pages of the virtually mapped linear p2m list.
    fn p2m_list_leaves(&self, l4: u64, vaddr: u64, n: usize, max_mfn: u64) -> Result<Vec<u64>> {
        let end = vaddr.wrapping_add(n as u64 * PAGE_SIZE as u64 - 1);
        let canonical = |v: u64| ((v as i64) >> 47) == ((v as i64) >> 63);
        // Xen's range: 0xffff800000000000..=0xffff87ffffffffff.
        if !canonical(vaddr)
            || !canonical(end)
            || end < vaddr
            || (vaddr <= 0xffff_87ff_ffff_ffff && end >= 0xffff_8000_0000_0000)
        {
            return Err(self.bad(format!("bad p2m virtual range {vaddr:#x}-{end:#x}")));
        }
        if l4 == 0 || l4 > max_mfn {
            return Err(self.bad(format!("bad p2m_cr3 mfn {l4:#x}")));
        }
        let mut cache: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut leaves = Vec::with_capacity(n);
        for i in 0..n {
            let va = vaddr + (i * PAGE_SIZE) as u64;
            let mut table = l4;
            for level in (1..=4u32).rev() {
                let idx = ((va >> (12 + 9 * (level - 1))) & 511) as usize;
                let e = match cache.entry(table) {
                    std::collections::hash_map::Entry::Occupied(o) => o.get()[idx],
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(self.read_table(table)?)[idx]
                    }
                };
                let mfn = pte::pte_to_frame(e);
                if e & pte::PAGE_PRESENT == 0 || mfn == 0 || mfn > max_mfn {
                    return Err(self.bad(format!(
                        "p2m list page {i} at {va:#x}: L{level} entry {e:#x} is not a valid frame"
                    )));
                }
                if level > 1 && e & pte::PAGE_PSE != 0 {
                    return Err(self.bad(format!("p2m list at {va:#x} mapped by a superpage")));
                }
                table = mfn;
            }
            leaves.push(table);
        }
        Ok(leaves)
    }

    /// mfns of the p2m leaves from the 3-level frame-list tree.
    fn p2m_tree_leaves(&self, fll: u64, n: usize, max_mfn: u64) -> Result<Vec<u64>> {
        if fll == 0 || fll > max_mfn {
            return Err(self.bad(format!("bad p2m frame list list mfn {fll:#x}")));
        }
        let fll = self.read_table(fll)?;
        let mut leaves = Vec::with_capacity(n);
        for &fl in fll.iter().take(n.div_ceil(512)) {
            if fl == 0 || fl > max_mfn {
                return Err(self.bad(format!("bad p2m frame list mfn {fl:#x}")));
            }
            leaves.extend(self.read_table(fl)?);
        }
        leaves.truncate(n);
        if let Some(bad) = leaves.iter().find(|&&m| m == 0 || m > max_mfn) {
            return Err(self.bad(format!("bad p2m leaf mfn {bad:#x}")));
        }
        Ok(leaves)
    }

    /// Suspends the guest: its suspend event channel if it has one, else
    /// `control/shutdown` = suspend; waits for SHUTDOWN_suspend.
    fn suspend(&mut self, progress: &mut dyn FnMut(&Progress)) -> Result<()> {
        if self.suspended {
            return Ok(());
        }
        let domid = self.domid;
        let timeout = self.opts.suspend_timeout;
        let t = Instant::now();
        self.suspend_started = Some(t);
        progress(&Progress::Suspending);
        let xs = self.xs;
        let mut watch = self.rt.block_on(xs.watch("@releaseDomain"))?;
        // From here on, a failure resumes the guest (a suspend request the
        // guest acted on late is cancelled by the resume).
        self.we_suspended = true;
        let port = self.rt.block_on(xs.suspend_event_channel(domid))?;
        let _evtchn;
        if let Some(port) = port {
            let ev = xenctrl::EventChannels::open()?;
            let local = ev.bind_interdomain(domid, port)?;
            ev.notify(local)?;
            _evtchn = Some(ev);
        } else {
            self.rt.block_on(xs.request_shutdown(domid, "suspend"))?;
            let acked = self.rt.block_on(xs.wait_shutdown_acked(domid, timeout))?;
            if acked {
                trace(format_args!("suspend request acknowledged"));
            }
            if !acked {
                // Withdraw the request so the guest does not act on it later.
                let _ = self
                    .rt
                    .block_on(xs.write(&xenstore::control_shutdown_path(domid), ""));
                return Err(SaveError::Suspend {
                    domid,
                    what: format!("control/shutdown not acknowledged within {timeout:?}"),
                });
            }
        }
        let left = timeout.saturating_sub(t.elapsed());
        let rt = self.rt;
        self.xc
            .wait_for_shutdown(domid, ShutdownReason::Suspend, left, |d| {
                let _ = rt.block_on(async {
                    tokio::time::timeout(d.min(Duration::from_millis(500)), watch.next()).await
                });
            })
            .map_err(|e| SaveError::Suspend {
                domid,
                what: e.to_string(),
            })?;
        self.suspended = true;
        trace(format_args!("suspended after {:?}", t.elapsed()));
        progress(&Progress::Suspended { took: t.elapsed() });
        Ok(())
    }

    /// Resumes the guest in place (suspend-cancel) and tells xenstored.
    fn resume(&mut self) -> Result<()> {
        resume_with(self.xc, self.rt, self.xs, self.domid)?;
        self.suspended = false;
        Ok(())
    }

    fn destroy(&mut self) -> Result<()> {
        destroy_with(self.xc, self.rt, self.xs, self.domid)
    }
}

fn resume_with(
    xc: &XenCtrl,
    rt: &tokio::runtime::Runtime,
    xs: &xenstore::Xenstore,
    domid: u32,
) -> Result<()> {
    let info = xc.domain_info(domid)?;
    if info.shutdown() == Some(ShutdownReason::Suspend) {
        xc.resume_domain(domid, true)?;
        rt.block_on(xs.resume_domain(domid))?;
    }
    Ok(())
}

/// Destroys the domain and removes what the toolstack kept for it in
/// xenstore (its home, `/libxl/<domid>`, its `/vm` entry and dom0
/// backend directories) and libxl's userdata files, as `xl save` leaves
/// nothing behind.  The `/vm` entry stays if another domain refers to it
/// (the incoming copy of a localhost migration has the same UUID).
fn destroy_with(
    xc: &XenCtrl,
    rt: &tokio::runtime::Runtime,
    xs: &xenstore::Xenstore,
    domid: u32,
) -> Result<()> {
    let home = format!("/local/domain/{domid}");
    let vm = rt
        .block_on(xs.try_read(&format!("{home}/vm")))?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    xc.destroy_domain(domid)?;
    rt.block_on(async {
        if let Ok(kinds) = xs.directory("/local/domain/0/backend").await {
            for k in kinds {
                let _ = xs.rm(&format!("/local/domain/0/backend/{k}/{domid}")).await;
            }
        }
        if let Some(vm) = vm.filter(|v| v.starts_with("/vm/")) {
            let mut shared = false;
            if let Ok(ids) = xs.directory("/local/domain").await {
                for id in ids.iter().filter(|id| **id != domid.to_string()) {
                    let other = xs.try_read(&format!("/local/domain/{id}/vm")).await;
                    if matches!(other, Ok(Some(v)) if v == vm.as_bytes()) {
                        shared = true;
                    }
                }
            }
            if !shared {
                let _ = xs.rm(&vm).await;
            }
        }
        let _ = xs.rm(&format!("/libxl/{domid}")).await;
        let _ = xs.rm(&home).await;
    });
    remove_userdata(domid);
    Ok(())
}

/// libxl's per-domain userdata files (`/var/lib/xen/userdata-d.<domid>.*`).
fn userdata_files(domid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("userdata-d.{domid}.");
    std::fs::read_dir(crate::restore::XEN_LIB_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn remove_userdata(domid: u32) {
    for f in userdata_files(domid) {
        let _ = std::fs::remove_file(f);
    }
}

/// The domain configuration libxl stored for `domid` (its `libxl-json`
/// userdata: what `xl list -l` prints), if there is one.
pub fn stored_config(domid: u32) -> Option<String> {
    userdata_files(domid)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".libxl-json"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        // libxl writes it with a terminating NUL.
        .map(|s| s.trim_end_matches(['\0', '\n']).to_string())
}

/// Connections for the free functions below.
fn connect() -> Result<(XenCtrl, tokio::runtime::Runtime, xenstore::Xenstore)> {
    let xc = XenCtrl::open()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let xs = rt.block_on(xenstore::Xenstore::connect())?;
    Ok((xc, rt, xs))
}

/// Resumes a guest left suspended by a save ([`AfterSave::LeaveSuspended`])
/// in place (cooperative suspend-cancel); a no-op if it is not suspended.
pub fn resume_suspended(domid: u32) -> Result<()> {
    let (xc, rt, xs) = connect()?;
    resume_with(&xc, &rt, &xs, domid)
}

/// Destroys a (saved) guest and what the toolstack kept for it, as
/// [`AfterSave::Destroy`] does.
pub fn destroy_saved(domid: u32) -> Result<()> {
    let (xc, rt, xs) = connect()?;
    destroy_with(&xc, &rt, &xs, domid)
}

impl GuestMem<'_> {
    /// Re-reads the p2m from the guest's p2m frames.
    fn refresh_p2m(&mut self) -> Result<()> {
        let n = self.p2m_map.len();
        let mut b = vec![0u8; n];
        self.p2m_map.read(0, &mut b)?;
        self.p2m = b
            .chunks_exact(8)
            .take(self.max_pfn as usize + 1)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(())
    }

    /// The live phase assumes a fixed p2m layout, as the reference does.
    fn check_generation(&self) -> Result<()> {
        if let Some(g) = self.generation {
            let now = self.shinfo.arch().p2m_generation;
            if now != g {
                return Err(SaveError::P2mChanged {
                    domid: self.domid,
                    from: g,
                    to: now,
                });
            }
        }
        Ok(())
    }

    /// mfn -> pfn if the mfn belongs to the guest's pseudo-physical map
    /// (m2p and p2m agree).
    fn mfn_to_pfn(&self, mfn: u64) -> Option<u64> {
        if mfn > self.m2p.max_mfn() {
            return None;
        }
        let pfn = self.m2p.mfn_to_pfn(mfn)?;
        (pfn <= self.max_pfn && self.p2m.get(pfn as usize) == Some(&mfn)).then_some(pfn)
    }
}

fn write_raw_record<W: Write>(w: &mut StreamWriter<W>, rtype: u32, body: &[u8]) -> Result<()> {
    let mut b = Vec::with_capacity(body.len() + 16);
    encode_record_raw(rtype, body, &mut b);
    w.write_raw(&b)?;
    Ok(())
}

fn write_vcpu<W: Write>(w: &mut StreamWriter<W>, rtype: u32, id: u32, blob: &[u8]) -> Result<()> {
    let mut body = Vec::with_capacity(8 + blob.len());
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(blob);
    write_raw_record(w, rtype, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_xl_list_l() {
        let list =
            r#"[{"domid": 3, "config": {"c_info": {"type": "pv", "name": "g"}, "b_info": {}}}]"#;
        let c = domain_config_json(list).unwrap();
        let v: serde_json::Value = serde_json::from_str(&c).unwrap();
        assert_eq!(v["c_info"]["name"], "g");
        assert!(v.get("domid").is_none());
        let bare = r#"{"c_info": {"name": "h"}}"#;
        assert!(domain_config_json(bare).unwrap().contains("\"h\""));
        assert!(domain_config_json("[]").is_err());
        assert!(domain_config_json(r#"{"x": 1}"#).is_err());
        assert!(domain_config_json("nope").is_err());
    }

    #[test]
    fn options_default_to_a_non_live_xl_style_save() {
        let o = SaveOptions::default();
        assert!(!o.live);
        assert_eq!(o.after, AfterSave::Destroy);
        assert_eq!(o.policy.downtime_target, Duration::from_millis(300));
        assert_eq!(o.policy.max_rounds, 10);
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            SaveError::NoSuchDomain(77).to_string(),
            "domain 77 does not exist"
        );
        assert!(SaveError::NotPv {
            domid: 1,
            hvm: true
        }
        .to_string()
        .contains("not a PV guest (HVM)"));
        assert!(SaveError::Not64Bit { domid: 1, bits: 32 }
            .to_string()
            .contains("32-bit"));
    }

    #[test]
    fn vcpu_record_layout() {
        let mut v = Vec::new();
        let mut w = StreamWriter::new(&mut v);
        write_vcpu(&mut w, rec::X86_PV_VCPU_MSRS, 2, &[1u8; 16]).unwrap();
        assert_eq!(v.len(), 8 + 8 + 16);
        assert_eq!(&v[0..4], &rec::X86_PV_VCPU_MSRS.to_le_bytes());
        assert_eq!(&v[4..8], &24u32.to_le_bytes());
        assert_eq!(&v[8..12], &2u32.to_le_bytes());
    }
}
