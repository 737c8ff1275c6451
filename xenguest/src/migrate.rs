//! Live migration of a PV guest over a byte stream (TCP in practice): the
//! sender pre-copies the guest's memory while it runs, the receiver
//! restores it paused, and a hand-over decides which copy runs.
//!
//! # Protocol
//!
//! Control messages are single text lines, `xenguest-migrate/1 VERB ...\n`
//! (at most [`MAX_LINE`] bytes); between them flows the `xl save` format
//! (xl header with the domain configuration, libxl stream, libxc stream),
//! which is self-delimiting, so the receiver reads exactly the stream.
//!
//! ```text
//!  sender                                receiver
//!                   <- ready
//!  pre-copy, suspend, final pass
//!  stream (xl header, libxl, libxc) ->    restore, PAUSED
//!                   <- received DOMID NAME     (or: error TEXT)
//!  unpause ->                             (commit point)
//!                   <- running                 (or: error TEXT)
//!  destroy the source
//!  source-gone ->                         rename NAME--incoming to NAME
//!                   <- complete NAME
//! ```
//!
//! # Who runs, when
//!
//! The rule: never both copies running, never neither (except in the one
//! window described below, where the source is kept suspended and intact).
//!
//! * Before the sender writes `unpause`, the receiver's copy is paused and
//!   is destroyed on anything but `unpause` (error, end of stream, a
//!   broken connection, a bad message).  The sender resumes the source in
//!   place (suspend-cancel) on any failure after the suspend: a save
//!   error, a receiver `error`, a broken connection, a bad reply, or a
//!   failed write of `unpause` itself (bytes a failed write did not queue
//!   never reach the receiver, and it needs the whole line).
//! * The receiver unpauses only after reading the whole `unpause` line.
//!   If the unpause fails it destroys its copy and answers `error`; the
//!   sender then resumes the source.
//! * **The window after `unpause`**: once `unpause` has been written, the
//!   sender cannot know whether the receiver read it until `running` (or
//!   `error`) arrives.  If the connection breaks or times out in between,
//!   the destination copy may be running, or may have been destroyed
//!   (the receiver never saw `unpause`).  Resuming the source could make
//!   two running copies (two writers on the same disks: data loss);
//!   destroying it could leave none.  So the sender does neither: it
//!   leaves the source suspended, intact and resumable, and returns
//!   [`MigrateError::InDoubt`].  Whoever can ask the destination (the
//!   operator, or the daemon's `VM.pool_migrate`) then resumes the source
//!   (`xenguest` [`save::resume_suspended`]) only if the destination has
//!   no copy, or destroys it if the destination copy runs.  `xl migrate`
//!   does the same ("Domain state is now undefined").
//! * After `running` the migration has succeeded: the sender destroys the
//!   source.  If that fails, the source stays suspended (not running) and
//!   [`MigrateError::SourceNotDestroyed`] says so; the guest runs at the
//!   destination.
//!
//! # Names
//!
//! A localhost migration has both domains at once on one host: the
//! incoming one then gets xl's temporary name `NAME--incoming` (and keeps
//! the guest's UUID, sharing the source's `/vm/<uuid>` entry without
//! touching it), and is renamed to `NAME` when the sender reports the
//! source gone.  If that report never comes, it keeps the temporary name.
//!
//! # Resource use
//!
//! The sender writes the stream straight to the connection (records of
//! up to 1024 pages leave from the save's own batch buffer; a small
//! buffer only coalesces record headers); the receiver reads each record
//! as it needs it.  Neither side holds more than one batch of pages.
//!
//! Time limits are the transport's: [`send_to`] and [`receive_on`] set
//! read and write timeouts on their TCP connections.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::restore::{self, RestoreError, RestoreOptions, Restored};
use crate::save::{self, AfterSave, LivePolicy, Progress, SaveError, SaveOptions, SaveStats};

/// Protocol name and version, the first word of every control line.
pub const MAGIC: &str = "xenguest-migrate/1";
/// Longest control line accepted (with its newline).
pub const MAX_LINE: usize = 4096;

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Receiver: send the stream.
    Ready,
    /// Receiver: the stream is restored, the domain paused.
    Received { domid: u32, name: String },
    /// Either side: a failure (the sender of it has undone its part).
    Error(String),
    /// Sender: you are cleared to unpause.
    Unpause,
    /// Sender: the migration is off (before `unpause`).
    Abort(String),
    /// Receiver: the domain is unpaused and running.
    Running,
    /// Sender: the source domain is destroyed.
    SourceGone,
    /// Receiver: done; the domain's final name.
    Complete { name: String },
}

/// Why a migration (or one side of it) failed.
#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("the peer closed the connection {0}")]
    Closed(&'static str),
    #[error("domain configuration: {0}")]
    Config(String),
    /// The save failed; the source was resumed (or never suspended).
    #[error("save: {0}")]
    Save(#[from] SaveError),
    #[error("restore: {0}")]
    Restore(#[from] RestoreError),
    /// The receiver reported a failure and removed its copy.
    #[error("receiver: {0}")]
    Receiver(String),
    /// The sender called the migration off.
    #[error("sender aborted: {0}")]
    Aborted(String),
    #[error("destination: {0}")]
    Destination(String),
    /// A failure after the suspend, and resuming the source failed too.
    #[error("{error}; and resuming the source failed: {resume}")]
    ResumeFailed {
        error: Box<MigrateError>,
        resume: SaveError,
    },
    /// The hand-over's outcome is unknown (see the module docs): the source
    /// domain is left suspended; resume it only if the destination has no
    /// running copy.
    #[error("migration in doubt after `unpause` ({cause}): source domain {domid} left suspended; check the destination before resuming or destroying it")]
    InDoubt { domid: u32, cause: String },
    /// The guest runs at the destination but the (suspended) source could
    /// not be destroyed.
    #[error("guest runs at the destination (domid {dest_domid}) but destroying source domain {domid} failed: {error}")]
    SourceNotDestroyed {
        domid: u32,
        dest_domid: u32,
        error: SaveError,
    },
}

pub type Result<T> = std::result::Result<T, MigrateError>;

impl Msg {
    /// The line, newline included.  Free text has its line breaks
    /// replaced and is cut to fit [`MAX_LINE`].
    pub fn encode(&self) -> String {
        let body = match self {
            Msg::Ready => "ready".to_string(),
            Msg::Received { domid, name } => format!("received {domid} {}", clean(name)),
            Msg::Error(t) => format!("error {}", clean(t)),
            Msg::Unpause => "unpause".to_string(),
            Msg::Abort(t) => format!("abort {}", clean(t)),
            Msg::Running => "running".to_string(),
            Msg::SourceGone => "source-gone".to_string(),
            Msg::Complete { name } => format!("complete {}", clean(name)),
        };
        let mut line = format!("{MAGIC} {body}");
        if line.len() > MAX_LINE - 1 {
            let mut cut = MAX_LINE - 1;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        line.push('\n');
        line
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Msg> {
        let bad = |what: &str| MigrateError::Protocol(format!("{what}: {:?}", shown(line)));
        let s = std::str::from_utf8(line).map_err(|_| bad("control line is not UTF-8"))?;
        let rest = s
            .strip_prefix(MAGIC)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| bad("not a xenguest-migrate/1 control line"))?;
        let (verb, arg) = match rest.split_once(' ') {
            Some((v, a)) => (v, Some(a)),
            None => (rest, None),
        };
        let text = || arg.unwrap_or("").to_string();
        Ok(match (verb, arg) {
            ("ready", None) => Msg::Ready,
            ("received", Some(a)) => {
                let (d, n) = a
                    .split_once(' ')
                    .ok_or_else(|| bad("received without a name"))?;
                let domid = d.parse().map_err(|_| bad("received: bad domid"))?;
                if n.is_empty() {
                    return Err(bad("received: empty name"));
                }
                Msg::Received {
                    domid,
                    name: n.to_string(),
                }
            }
            ("error", _) => Msg::Error(text()),
            ("unpause", None) => Msg::Unpause,
            ("abort", _) => Msg::Abort(text()),
            ("running", None) => Msg::Running,
            ("source-gone", None) => Msg::SourceGone,
            ("complete", Some(n)) if !n.is_empty() => Msg::Complete {
                name: n.to_string(),
            },
            _ => return Err(bad("unknown control message")),
        })
    }
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn shown(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned()
}

/// One end of the connection: buffered reads (the restore reads the
/// stream through the same buffer), unbuffered writes of control lines.
struct Conn<S> {
    r: BufReader<S>,
}

impl<S: Read + Write> Conn<S> {
    fn new(s: S) -> Self {
        Conn {
            r: BufReader::with_capacity(64 << 10, s),
        }
    }

    fn send(&mut self, m: &Msg) -> Result<()> {
        let s = self.r.get_mut();
        s.write_all(m.encode().as_bytes())?;
        s.flush()?;
        Ok(())
    }

    /// The next control line; `waiting` names it for errors.
    fn recv(&mut self, waiting: &'static str) -> Result<Msg> {
        let mut line = Vec::new();
        (&mut self.r)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') {
            if line.is_empty() {
                return Err(MigrateError::Closed(waiting));
            }
            if line.len() >= MAX_LINE {
                return Err(MigrateError::Protocol(format!(
                    "control line longer than {MAX_LINE} bytes {waiting}"
                )));
            }
            // A partial line is not a message (an `unpause` must be whole).
            return Err(MigrateError::Closed(waiting));
        }
        line.pop();
        Msg::parse(&line)
    }
}

/// Sender's side of the migration.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrateOptions {
    /// Pre-copy while the guest runs (default); otherwise suspend first.
    pub live: bool,
    /// Live phase tuning (downtime target, rounds, byte cap).
    pub policy: LivePolicy,
    /// How long the guest may take to suspend.
    pub suspend_timeout: Duration,
    /// The domain configuration (`libxl_domain_config` JSON) for the
    /// receiver; default: what libxl stored for the domain.
    pub config_json: Option<String>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            live: true,
            policy: LivePolicy::default(),
            suspend_timeout: Duration::from_secs(60),
            config_json: None,
        }
    }
}

/// Receiver's side of the migration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Name of the new domain (default: the sender's).
    pub name: Option<String>,
}

/// What the sender reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum MigrateProgress {
    /// Connected; waiting for the receiver's `ready`.
    WaitingForReceiver,
    /// The save's progress (rounds with bytes and dirty pages, suspend,
    /// final pass).
    Save(Progress),
    /// The stream is sent; waiting for the receiver's restore.
    StreamSent { bytes: u64 },
    /// The receiver restored the guest, paused.
    Received { domid: u32, name: String },
    /// `unpause` is sent: the commit point.
    ClearedToUnpause,
    /// The destination copy runs.
    DestinationRunning,
    /// The source domain is destroyed.
    SourceDestroyed,
}

/// Figures of a finished migration (sender side).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SendStats {
    /// The save's figures (bytes, rounds, dirty pages per round, ...).
    pub save: SaveStats,
    /// The new domain at the destination.
    pub dest_domid: u32,
    /// Its final name (None: the receiver did not confirm the rename).
    pub dest_name: Option<String>,
    /// From the suspend request until the destination reported running:
    /// the downtime as the toolstack sees it.
    pub downtime: Duration,
    /// From the end of the stream until the receiver reported the
    /// restore done.
    pub restore_wait: Duration,
    /// The whole migration.
    pub total: Duration,
}

/// The Xen operations of the sender (a trait so that the hand-over logic
/// is tested without Xen).
pub trait Source {
    /// The domain configuration to send.
    fn config(&mut self, domid: u32) -> Result<String>;
    /// Saves the domain (resuming it itself on failure).
    fn save(
        &mut self,
        domid: u32,
        out: &mut dyn Write,
        opts: &SaveOptions,
        progress: &mut dyn FnMut(&Progress),
    ) -> save::Result<SaveStats>;
    /// Resumes the suspended domain in place.
    fn resume(&mut self, domid: u32) -> save::Result<()>;
    /// Destroys the suspended domain.
    fn destroy(&mut self, domid: u32) -> save::Result<()>;
}

/// The Xen operations of the receiver.
pub trait Destination {
    /// Restores the stream from `input` with `opts` (paused).
    fn restore(
        &mut self,
        input: &mut dyn Read,
        opts: &RestoreOptions,
    ) -> std::result::Result<Restored, RestoreError>;
    fn unpause(&mut self, domid: u32) -> Result<()>;
    /// Destroys the domain and what restore wrote for it.
    fn discard(&mut self, domid: u32) -> Result<()>;
    fn rename(&mut self, domid: u32, name: &str) -> Result<()>;
}

/// The real thing: this host's Xen.
#[derive(Debug, Default, Clone, Copy)]
pub struct Xen;

impl Source for Xen {
    fn config(&mut self, domid: u32) -> Result<String> {
        let text = save::stored_config(domid).ok_or_else(|| {
            MigrateError::Config(format!(
                "libxl stored no configuration for domain {domid} (not created by xl?)"
            ))
        })?;
        save::domain_config_json(&text).map_err(MigrateError::Config)
    }

    fn save(
        &mut self,
        domid: u32,
        mut out: &mut dyn Write,
        opts: &SaveOptions,
        progress: &mut dyn FnMut(&Progress),
    ) -> save::Result<SaveStats> {
        save::save(domid, &mut out, opts, progress)
    }

    fn resume(&mut self, domid: u32) -> save::Result<()> {
        save::resume_suspended(domid)
    }

    fn destroy(&mut self, domid: u32) -> save::Result<()> {
        save::destroy_saved(domid)
    }
}

impl Destination for Xen {
    fn restore(
        &mut self,
        mut input: &mut dyn Read,
        opts: &RestoreOptions,
    ) -> std::result::Result<Restored, RestoreError> {
        restore::restore(&mut input, opts)
    }

    fn unpause(&mut self, domid: u32) -> Result<()> {
        xenctrl::XenCtrl::open()
            .and_then(|xc| xc.unpause_domain(domid))
            .map_err(|e| MigrateError::Destination(format!("unpause domain {domid}: {e}")))
    }

    fn discard(&mut self, domid: u32) -> Result<()> {
        restore::discard(domid)
            .map_err(|e| MigrateError::Destination(format!("destroy domain {domid}: {e}")))
    }

    fn rename(&mut self, domid: u32, name: &str) -> Result<()> {
        restore::rename(domid, name).map_err(|e| {
            MigrateError::Destination(format!("rename domain {domid} to {name:?}: {e}"))
        })
    }
}

/// Migrates domain `domid` to the receiver at the other end of `stream`
/// (see the module docs).  On success the source is destroyed.
pub fn send<S: Read + Write>(
    domid: u32,
    stream: S,
    opts: &MigrateOptions,
    progress: impl FnMut(&MigrateProgress),
) -> Result<SendStats> {
    send_with(&mut Xen, domid, stream, opts, progress)
}

/// Receives one migration from the sender at the other end of `stream`;
/// returns the running domain (with its final name).
pub fn receive<S: Read + Write>(stream: S, opts: &ReceiveOptions) -> Result<Restored> {
    receive_with(&mut Xen, stream, opts)
}

/// [`send`] with the Xen operations given.
pub fn send_with<S: Read + Write, X: Source>(
    x: &mut X,
    domid: u32,
    stream: S,
    opts: &MigrateOptions,
    mut progress: impl FnMut(&MigrateProgress),
) -> Result<SendStats> {
    let t0 = Instant::now();
    let config_json = match &opts.config_json {
        Some(c) => c.clone(),
        None => x.config(domid)?,
    };
    let mut conn = Conn::new(stream);
    progress(&MigrateProgress::WaitingForReceiver);
    match conn.recv("before the receiver was ready")? {
        Msg::Ready => {}
        Msg::Error(e) => return Err(MigrateError::Receiver(e)),
        m => return Err(unexpected(&m, "ready")),
    }

    // The stream.  A failing save resumes the guest itself.
    let sopts = SaveOptions {
        live: opts.live,
        after: AfterSave::LeaveSuspended,
        wrapper: save::Wrapper::Xl { config_json },
        suspend_timeout: opts.suspend_timeout,
        policy: opts.policy,
    };
    let mut suspend_at = None;
    let saved = {
        // Small: it only joins record headers; page batches pass through.
        let mut w = BufWriter::with_capacity(16 << 10, conn.r.get_mut());
        let mut cb = |p: &Progress| {
            if matches!(p, Progress::Suspending) {
                suspend_at = Some(Instant::now());
            }
            progress(&MigrateProgress::Save(p.clone()));
        };
        x.save(domid, &mut w, &sopts, &mut cb)
    };
    let stats = match saved {
        Ok(s) => s,
        Err(e) => {
            // A receiver that hung up may have said why first.
            if peer_hung_up(&e) {
                if let Ok(Msg::Error(why)) = conn.recv("") {
                    return Err(MigrateError::Receiver(format!("{why} (save: {e})")));
                }
            }
            return Err(e.into());
        }
    };
    let sent_at = Instant::now();
    progress(&MigrateProgress::StreamSent { bytes: stats.bytes });

    // The guest is suspended: until `unpause` is written, any failure
    // resumes it.
    let resume = |x: &mut X, error: MigrateError| match x.resume(domid) {
        Ok(()) => error,
        Err(resume) => MigrateError::ResumeFailed {
            error: Box::new(error),
            resume,
        },
    };
    let (dest_domid, name) = match conn.recv("before reporting the restore") {
        Ok(Msg::Received { domid, name }) => (domid, name),
        Ok(Msg::Error(e)) => return Err(resume(x, MigrateError::Receiver(e))),
        Ok(m) => {
            let _ = conn.send(&Msg::Abort("unexpected message".into()));
            return Err(resume(x, unexpected(&m, "received")));
        }
        Err(e) => return Err(resume(x, e)),
    };
    let restore_wait = sent_at.elapsed();
    progress(&MigrateProgress::Received {
        domid: dest_domid,
        name: name.clone(),
    });
    if let Err(e) = conn.send(&Msg::Unpause) {
        // A failed write queued nothing: the receiver cannot have a whole
        // `unpause` line, so it will not run its copy.
        return Err(resume(x, e));
    }
    progress(&MigrateProgress::ClearedToUnpause);
    match conn.recv("after `unpause`") {
        Ok(Msg::Running) => {}
        // The receiver's unpause failed and it destroyed its copy.
        Ok(Msg::Error(e)) => return Err(resume(x, MigrateError::Receiver(e))),
        Ok(m) => {
            return Err(MigrateError::InDoubt {
                domid,
                cause: unexpected(&m, "running").to_string(),
            })
        }
        Err(e) => {
            return Err(MigrateError::InDoubt {
                domid,
                cause: e.to_string(),
            })
        }
    }
    let downtime = suspend_at.map(|t| t.elapsed()).unwrap_or_default();
    progress(&MigrateProgress::DestinationRunning);
    if let Err(error) = x.destroy(domid) {
        return Err(MigrateError::SourceNotDestroyed {
            domid,
            dest_domid,
            error,
        });
    }
    progress(&MigrateProgress::SourceDestroyed);
    // Lets the receiver take the guest's name; the migration is done
    // whatever happens from here.
    let dest_name = match conn.send(&Msg::SourceGone) {
        Ok(()) => match conn.recv("before confirming the name") {
            Ok(Msg::Complete { name }) => Some(name),
            _ => None,
        },
        Err(_) => None,
    };
    Ok(SendStats {
        save: stats,
        dest_domid,
        dest_name,
        downtime,
        restore_wait,
        total: t0.elapsed(),
    })
}

/// Whether a save failed because the other end closed the connection (a
/// read then returns at once, never blocks).
fn peer_hung_up(e: &SaveError) -> bool {
    use std::io::ErrorKind::*;
    let io = match e {
        SaveError::Write(crate::stream::StreamError::Io(e)) | SaveError::Io(e) => e,
        _ => return false,
    };
    matches!(io.kind(), BrokenPipe | ConnectionReset | ConnectionAborted)
}

fn unexpected(m: &Msg, wanted: &str) -> MigrateError {
    MigrateError::Protocol(format!("expected `{wanted}`, got {m:?}"))
}

/// [`receive`] with the Xen operations given.
pub fn receive_with<S: Read + Write, D: Destination>(
    d: &mut D,
    stream: S,
    opts: &ReceiveOptions,
) -> Result<Restored> {
    let mut conn = Conn::new(stream);
    conn.send(&Msg::Ready)?;
    let ropts = RestoreOptions {
        name: opts.name.clone(),
        paused: true,
        incoming: true,
        ..RestoreOptions::default()
    };
    // Restore cleans up after itself on failure.
    let mut r = match d.restore(&mut conn.r, &ropts) {
        Ok(r) => r,
        Err(e) => {
            let _ = conn.send(&Msg::Error(format!("restore: {e}")));
            return Err(e.into());
        }
    };
    crate::restore::trace_step("xenguest:", format_args!("restored, telling the sender"));
    // Until `unpause` arrives, anything else discards the paused copy.
    let cleared = conn
        .send(&Msg::Received {
            domid: r.domid,
            name: r.name.clone(),
        })
        .and_then(|()| match conn.recv("before `unpause`")? {
            Msg::Unpause => {
                crate::restore::trace_step("xenguest:", format_args!("unpause"));
                Ok(())
            }
            Msg::Abort(why) => Err(MigrateError::Aborted(why)),
            m => Err(unexpected(&m, "unpause")),
        })
        .and_then(|()| d.unpause(r.domid));
    if let Err(e) = cleared {
        let e = match d.discard(r.domid) {
            Ok(()) => e,
            Err(de) => MigrateError::Destination(format!("{e}; and then: {de}")),
        };
        // Tells the sender (if it still listens) to resume its copy.
        let _ = conn.send(&Msg::Error(e.to_string()));
        return Err(e);
    }
    // Ours to run from here, whatever happens to the connection.
    if conn.send(&Msg::Running).is_err() {
        return Ok(r);
    }
    if let Ok(Msg::SourceGone) = conn.recv("before the source was gone") {
        if let Some(base) = r.name.strip_suffix("--incoming") {
            if !base.is_empty() && d.rename(r.domid, base).is_ok() {
                r.name = base.to_string();
            }
        }
        let _ = conn.send(&Msg::Complete {
            name: r.name.clone(),
        });
    }
    Ok(r)
}

/// Default read/write timeout of [`send_to`] and [`receive_on`]: longer
/// than any pause in the protocol (a suspend, a restore's final steps).
pub const IO_TIMEOUT: Duration = Duration::from_secs(300);

/// Sets up a migration connection: no Nagle delay for the control lines,
/// [`IO_TIMEOUT`] on reads and writes.
pub fn tune(s: &TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))
}

/// Connects to `addr` and migrates domain `domid` there.
pub fn send_to(
    domid: u32,
    addr: impl ToSocketAddrs,
    opts: &MigrateOptions,
    progress: impl FnMut(&MigrateProgress),
) -> Result<SendStats> {
    let s = TcpStream::connect(addr)?;
    tune(&s)?;
    send(domid, s, opts, progress)
}

/// Accepts one connection on `listener` and receives its migration.
pub fn receive_on(listener: &TcpListener, opts: &ReceiveOptions) -> Result<Restored> {
    let (s, _) = listener.accept()?;
    tune(&s)?;
    receive(s, opts)
}

#[cfg(test)]
mod tests;
