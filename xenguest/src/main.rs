//! `xenguest`: save, restore and live migration of 64-bit PV guests from
//! dom0's command line. `xenguest --help` lists the commands.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use xenguest::save::{
    domain_config_json, save, AfterSave, LivePolicy, Progress, SaveOptions, Wrapper,
};

use xenguest::stream::{DecoderOptions, Item, Record, StreamReader};

/// Save, restore and live migration of 64-bit PV guests (libxc stream v3).
#[derive(Parser, Debug)]
#[command(
    name = "xenguest",
    version,
    after_help = "On any failure the guest keeps running (it is resumed if it was suspended) \
                  and log-dirty mode is off again."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Describe a libxc stream, libxl stream or xl save file
    Inspect { file: PathBuf },
    /// Save a running 64-bit PV guest to FILE (non-live by default)
    Save {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        save: SaveArgs,
    },
    /// The same, writing the stream to standard output (live by default)
    Send {
        #[command(flatten)]
        save: SaveArgs,
    },
    /// Restore a libxc stream, libxl stream or xl save file as a new domain;
    /// prints its domid
    Restore {
        /// The stream (`-`: standard input)
        #[arg(long = "in", value_name = "FILE|-")]
        input: String,
        #[command(flatten)]
        opts: RestoreArgs,
    },
    /// The same, reading the stream from standard input
    Receive {
        #[command(flatten)]
        opts: RestoreArgs,
    },
    /// Receive one live migration over TCP, then exit (prints a line once
    /// listening, and the new domain's id and name at the end)
    MigrateReceive {
        #[arg(long, value_name = "ADDR:PORT")]
        listen: String,
        /// Name of the new domain (default: the sender's)
        #[arg(long)]
        name: Option<String>,
    },
    /// Live-migrate domain N to a migrate-receive at HOST:PORT; progress on
    /// standard error, a summary line at the end
    MigrateSend {
        #[arg(long, value_name = "N")]
        domid: u32,
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
        #[command(flatten)]
        live: LiveArgs,
    },
}

#[derive(Args, Debug)]
struct RestoreArgs {
    /// Domain name (default: the saved config's)
    #[arg(long)]
    name: Option<String>,
    /// Memory (default: the saved config's)
    #[arg(long, value_name = "MIB")]
    memory: Option<u64>,
    /// Maximum vCPUs (default: the saved config's)
    #[arg(long, value_name = "N")]
    vcpus: Option<u32>,
    /// Leave the new domain paused
    #[arg(long)]
    paused: bool,
}

/// What save, send and migrate-send share: how the live phase runs.
#[derive(Args, Debug)]
struct LiveArgs {
    /// Pre-copy while the guest runs (log-dirty rounds), then suspend for
    /// the final pass
    #[arg(long, overrides_with = "non_live")]
    live: bool,
    /// Suspend first, then write everything
    #[arg(long, overrides_with = "live")]
    non_live: bool,
    /// Write an `xl save` file (`xl restore FILE` reads it): FILE holds the
    /// domain config as JSON, the output of `xl list -l NAME` or a
    /// libxl_domain_config
    #[arg(long, value_name = "FILE")]
    xl_config: Option<PathBuf>,
    /// Live: suspend once the estimated final pass takes at most N ms at the
    /// measured bandwidth
    #[arg(long, value_name = "N", default_value_t = LivePolicy::default().downtime_target.as_millis() as u64)]
    downtime_ms: u64,
    /// Live: suspend after at most N rounds
    #[arg(long, value_name = "N", default_value_t = LivePolicy::default().max_rounds)]
    max_rounds: u32,
    /// Live: suspend once the bytes sent exceed F times the guest's RAM
    #[arg(long, value_name = "F", default_value_t = LivePolicy::default().max_bytes_factor)]
    max_bytes_factor: f64,
    /// Seconds the guest may take to suspend
    #[arg(long, value_name = "S", default_value_t = SaveOptions::default().suspend_timeout.as_secs())]
    suspend_timeout: u64,
    /// No progress lines on standard error
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct SaveArgs {
    #[arg(long, value_name = "N")]
    domid: u32,
    #[command(flatten)]
    live: LiveArgs,
    /// Write a libxl stream (LibxlFmt) without the xl header (default
    /// without --xl-config: the bare libxc stream)
    #[arg(long, conflicts_with = "xl_config")]
    libxl: bool,
    /// Resume the guest in place after the save
    #[arg(long, overrides_with = "leave_suspended")]
    resume: bool,
    /// Leave the guest suspended after the save (default: destroy it, as
    /// `xl save` does)
    #[arg(long, overrides_with = "resume")]
    leave_suspended: bool,
}

impl LiveArgs {
    /// The save options these flags ask for; `live` unless told otherwise
    /// when `live_default`. Reads the --xl-config file.
    fn options(&self, live_default: bool) -> Result<SaveOptions, String> {
        let wrapper = match &self.xl_config {
            Some(f) => {
                let what = |e: &dyn std::fmt::Display| format!("{}: {e}", f.display());
                let text = std::fs::read_to_string(f).map_err(|e| what(&e))?;
                Wrapper::Xl {
                    config_json: domain_config_json(&text).map_err(|e| what(&e))?,
                }
            }
            None => Wrapper::Libxc,
        };
        Ok(SaveOptions {
            live: (live_default || self.live) && !self.non_live,
            wrapper,
            suspend_timeout: Duration::from_secs(self.suspend_timeout),
            policy: LivePolicy {
                downtime_target: Duration::from_millis(self.downtime_ms),
                max_rounds: self.max_rounds,
                max_bytes_factor: self.max_bytes_factor,
            },
            ..SaveOptions::default()
        })
    }
}

impl SaveArgs {
    fn options(&self, live_default: bool) -> Result<SaveOptions, String> {
        let mut o = self.live.options(live_default)?;
        if self.libxl {
            o.wrapper = Wrapper::Libxl;
        }
        if self.resume {
            o.after = AfterSave::Resume;
        } else if self.leave_suspended {
            o.after = AfterSave::LeaveSuspended;
        }
        Ok(o)
    }
}

/// `xenguest restore --in FILE|-` and `xenguest receive` (`input` is
/// `-`): prints the new domid.
fn restore_cmd(input: &str, a: RestoreArgs) -> ExitCode {
    use xenguest::restore::{restore, RestoreOptions};
    let opts = RestoreOptions {
        name: a.name,
        memory_mib: a.memory,
        max_vcpus: a.vcpus,
        paused: a.paused,
        ..RestoreOptions::default()
    };
    let result = if input == "-" {
        restore(&mut std::io::stdin().lock(), &opts)
    } else {
        match File::open(input) {
            Ok(f) => restore(&mut BufReader::with_capacity(1 << 20, f), &opts),
            Err(e) => {
                eprintln!("xenguest: {input}: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    match result {
        Ok(r) => {
            eprintln!(
                "xenguest: restored {:?} as domid {} ({} pages, {} vCPUs, libxc v{}){}",
                r.name,
                r.domid,
                r.pages,
                r.vcpus,
                r.stream_version,
                if opts.paused { ", paused" } else { "" }
            );
            println!("{}", r.domid);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xenguest: restore failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn describe(item: &Item) -> String {
    match item {
        Item::XlHeader(h) => format!(
            "xl header: mandatory {:#x}, optional {:#x}, config {} bytes{}",
            h.mandatory_flags,
            h.optional_flags,
            h.config.as_ref().map_or(0, Vec::len),
            if h.is_json() { " (JSON)" } else { "" }
        ),
        Item::LibxlHeader(h) => format!(
            "libxl header: version 2, options {:#x}{}",
            h.options,
            if h.is_legacy() { " (legacy)" } else { "" }
        ),
        Item::LibxlRecord(r) => format!("libxl record {} ({:#x})", r.name(), r.rtype()),
        Item::ImageHeader(h) => format!("libxc image header: version {}", h.version),
        Item::DomainHeader(h) => format!(
            "libxc domain header: {} from Xen {}.{}",
            h.domain_type.name(),
            h.xen_major,
            h.xen_minor
        ),
        Item::Record(r) => {
            let detail = match r {
                Record::PageData(p) => {
                    let mut types: BTreeMap<String, usize> = BTreeMap::new();
                    for e in &p.entries {
                        *types.entry(format!("{:?}", e.ptype)).or_default() += 1;
                    }
                    let lo = p.entries.iter().map(|e| e.pfn).min().unwrap_or(0);
                    let hi = p.entries.iter().map(|e| e.pfn).max().unwrap_or(0);
                    format!(
                        ": {} pfns {lo:#x}..={hi:#x}, {} pages of data, {types:?}",
                        p.entries.len(),
                        p.pages_with_data()
                    )
                }
                Record::X86PvInfo(i) => {
                    format!(": width {}, {} levels", i.guest_width, i.pt_levels)
                }
                Record::X86PvP2mFrames(f) => format!(
                    ": pfns {:#x}..={:#x}, {} frames",
                    f.start_pfn,
                    f.end_pfn,
                    f.frames.len()
                ),
                Record::X86PvVcpu(v) => format!(": vcpu {}, {} bytes", v.vcpu_id, v.data.len()),
                Record::X86TscInfo(t) => format!(
                    ": mode {}, {} kHz, {} ns, incarnation {}",
                    t.mode, t.khz, t.nsec, t.incarnation
                ),
                Record::X86CpuidPolicy(l) => format!(": {} leaves", l.len()),
                Record::X86MsrPolicy(m) => format!(": {} MSRs", m.len()),
                Record::HvmParams(p) => format!(": {} params", p.len()),
                Record::HvmContext(d) | Record::SharedInfo(d) => format!(": {} bytes", d.len()),
                Record::CheckpointDirtyPfnList(p) => format!(": {} pfns", p.len()),
                Record::Optional { body, .. } => format!(": {} bytes", body.len()),
                _ => String::new(),
            };
            format!("  libxc record {} ({:#x}){detail}", r.name(), r.rtype())
        }
    }
}

fn inspect(path: &std::path::Path) -> ExitCode {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("xenguest: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut reader = StreamReader::new(BufReader::new(file), DecoderOptions::default());
    loop {
        let offset = reader.decoder().consumed();
        match reader.next_item() {
            Ok(Some(item)) => println!("{offset:>10}  {}", describe(&item)),
            Ok(None) => break,
            Err(e) => {
                eprintln!(
                    "xenguest: {}: at offset {}: {e}",
                    path.display(),
                    reader.decoder().consumed()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    if reader.decoder().inferred_static_data_end() {
        println!("(v2 stream: STATIC_DATA_END inferred)");
    }
    ExitCode::SUCCESS
}

fn report(p: &Progress) {
    match p {
        Progress::LiveStarted { p2m_size } => {
            eprintln!("xenguest: live: log-dirty on, {p2m_size} pfns")
        }
        Progress::Round(r) => eprintln!(
            "xenguest: round {}: sent {} pages ({} deferred) in {:.3} s, {} dirty, {} bytes total, {:.1} MiB/s, est. downtime {}",
            r.round,
            r.pages_sent,
            r.deferred,
            r.duration.as_secs_f64(),
            r.dirty_after,
            r.bytes_total,
            r.bandwidth / 1048576.0,
            r.estimated_downtime
                .map_or("?".to_string(), |d| format!("{} ms", d.as_millis()))
        ),
        Progress::LiveStopped(r) => eprintln!("xenguest: live phase stopped: {r:?}"),
        Progress::Suspending => eprintln!("xenguest: suspending"),
        Progress::Suspended { took } => {
            eprintln!("xenguest: suspended in {} ms", took.as_millis())
        }
        Progress::FinalPass {
            pages_sent,
            bytes_total,
        } => eprintln!("xenguest: final pass: {pages_sent} pages, {bytes_total} bytes total"),
        Progress::Complete { bytes_total } => {
            eprintln!("xenguest: stream complete: {bytes_total} bytes")
        }
    }
}

/// `xenguest save --out FILE` and `xenguest send` (`out` is `None`: stdout).
fn save_cmd(a: &SaveArgs, out: Option<PathBuf>, send: bool) -> ExitCode {
    let (domid, quiet) = (a.domid, a.live.quiet);
    let opts = match a.options(send) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xenguest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let progress = |p: &Progress| {
        if !quiet {
            report(p)
        }
    };
    let r = match &out {
        Some(path) => {
            let f = match File::create(path) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("xenguest: {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            };
            let mut w = BufWriter::with_capacity(1 << 20, f);
            save(domid, &mut w, &opts, progress).and_then(|s| {
                w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                Ok(s)
            })
        }
        None => {
            let mut w = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            save(domid, &mut w, &opts, progress)
        }
    };
    match r {
        Ok(s) => {
            if !quiet {
                eprintln!(
                    "xenguest: saved domain {domid}: {} bytes, {} pages, {} rounds {:?}, final pass {} pages, suspended for {} ms, total {} ms",
                    s.bytes,
                    s.pages_sent,
                    s.rounds,
                    s.dirty_per_round,
                    s.final_pages,
                    s.suspended_for.as_millis(),
                    s.total.as_millis()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xenguest: save of domain {domid} failed: {e}");
            if let Some(path) = &out {
                // Leave no half-written file that looks like a save.
                let _ = std::fs::remove_file(path);
            }
            ExitCode::FAILURE
        }
    }
}

/// On SIGTERM, SIGINT or SIGHUP, shuts the migration connection down
/// instead of dying: the migration then fails the ordinary way, and its
/// cleanup runs (the sender resumes its guest, the receiver destroys a
/// half-built domain).  A SIGKILLed receiver leaves its paused domain.
fn cut_on_signal(conn: &std::net::TcpStream) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(conn) = conn.try_clone() else { return };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return,
    };
    // Registered here, before the migration starts, not in the thread.
    let sigs = rt.block_on(async {
        Some((
            signal(SignalKind::terminate()).ok()?,
            signal(SignalKind::interrupt()).ok()?,
            signal(SignalKind::hangup()).ok()?,
        ))
    });
    let Some((mut term, mut int, mut hup)) = sigs else {
        return;
    };
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {}
            }
        });
        eprintln!("xenguest: signal: cutting the migration connection");
        let _ = conn.shutdown(std::net::Shutdown::Both);
    });
}

fn migrate_receive_cmd(listen: String, name: Option<String>) -> ExitCode {
    use xenguest::migrate::{receive, tune, ReceiveOptions};
    let opts = ReceiveOptions { name };
    let l = match std::net::TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("xenguest: listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let at = l.local_addr().map_or(listen.clone(), |a| a.to_string());
    println!("xenguest: migration receiver listening on {at}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let conn = match l.accept() {
        Ok((c, _)) => c,
        Err(e) => {
            eprintln!("xenguest: accept: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = tune(&conn) {
        eprintln!("xenguest: {e}");
        return ExitCode::FAILURE;
    }
    cut_on_signal(&conn);
    match receive(conn, &opts) {
        Ok(r) => {
            println!(
                "xenguest: received domain {} as domid {}, running",
                r.name, r.domid
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xenguest: migration receive failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn migrate_send_cmd(domid: u32, to: String, live: &LiveArgs) -> ExitCode {
    use xenguest::migrate::{send, tune, MigrateOptions, MigrateProgress};
    let quiet = live.quiet;
    let sopts = match live.options(true) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xenguest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = MigrateOptions {
        live: sopts.live,
        policy: sopts.policy,
        suspend_timeout: sopts.suspend_timeout,
        config_json: match sopts.wrapper {
            Wrapper::Xl { config_json } => Some(config_json),
            _ => None,
        },
    };
    let progress = |p: &MigrateProgress| {
        if quiet {
            return;
        }
        match p {
            MigrateProgress::Save(p) => report(p),
            MigrateProgress::WaitingForReceiver => {
                eprintln!("xenguest: connected to {to}, waiting for the receiver")
            }
            MigrateProgress::StreamSent { bytes } => {
                eprintln!("xenguest: stream sent ({bytes} bytes), waiting for the restore")
            }
            MigrateProgress::Received { domid, name } => {
                eprintln!("xenguest: restored paused at the receiver as domid {domid} ({name})")
            }
            MigrateProgress::ClearedToUnpause => eprintln!("xenguest: cleared to unpause"),
            MigrateProgress::DestinationRunning => {
                eprintln!("xenguest: running at the destination")
            }
            MigrateProgress::SourceDestroyed => eprintln!("xenguest: source destroyed"),
        }
    };
    let conn = match std::net::TcpStream::connect(&to).and_then(|c| tune(&c).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xenguest: connect to {to}: {e}");
            return ExitCode::FAILURE;
        }
    };
    cut_on_signal(&conn);
    match send(domid, conn, &opts, progress) {
        Ok(s) => {
            eprintln!(
                "xenguest: migrated domain {domid} to {to}: domid {} name {} bytes {} rounds {} dirty {:?} final_pages {} downtime_ms {} total_ms {}",
                s.dest_domid,
                s.dest_name.as_deref().unwrap_or("?"),
                s.save.bytes,
                s.save.rounds,
                s.save.dirty_per_round,
                s.save.final_pages,
                s.downtime.as_millis(),
                s.total.as_millis()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xenguest: migration of domain {domid} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // --help prints and exits 0; a bad command line exits 2, as clap does.
    match Cli::parse().cmd {
        Cmd::Inspect { file } => inspect(&file),
        Cmd::Save { out, save } => save_cmd(&save, Some(out), false),
        Cmd::Send { save } => save_cmd(&save, None, true),
        Cmd::Restore { input, opts } => restore_cmd(&input, opts),
        Cmd::Receive { opts } => restore_cmd("-", opts),
        Cmd::MigrateReceive { listen, name } => migrate_receive_cmd(listen, name),
        Cmd::MigrateSend { domid, to, live } => migrate_send_cmd(domid, to, &live),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{error::ErrorKind, CommandFactory};

    fn parse(a: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xenguest").chain(a.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_flags_are_errors_and_help_is_not() {
        let kind = |a: &[&str]| parse(a).unwrap_err().kind();
        assert_eq!(
            kind(&["save", "--domid", "1", "--out", "f", "--bogus"]),
            ErrorKind::UnknownArgument
        );
        // migrate-send takes the live options only, not save's wrappers.
        assert_eq!(
            kind(&["migrate-send", "--domid", "1", "--to", "h:1", "--libxl"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(kind(&["inspect"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["save", "--domid", "1"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["save", "--domid", "x", "--out", "f"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind(&["bogus"]), ErrorKind::InvalidSubcommand);
        assert_eq!(kind(&["--help"]), ErrorKind::DisplayHelp);
        assert_eq!(kind(&["migrate-send", "--help"]), ErrorKind::DisplayHelp);
        assert_eq!(parse(&["--bogus"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn save_send_and_migrate_send_options() {
        let opts = |a: &[&str], live_default| match parse(a).unwrap().cmd {
            Cmd::Save { save, .. } | Cmd::Send { save } => save.options(live_default).unwrap(),
            Cmd::MigrateSend { live, .. } => live.options(live_default).unwrap(),
            c => panic!("{c:?}"),
        };
        let save = opts(&["save", "--domid", "3", "--out", "f"], false);
        assert!(!save.live);
        assert_eq!(save.policy.max_rounds, LivePolicy::default().max_rounds);
        assert_eq!(save.suspend_timeout, SaveOptions::default().suspend_timeout);
        assert!(matches!(save.after, AfterSave::Destroy));
        let send = opts(&["send", "--domid", "3", "--libxl", "--resume"], true);
        assert!(send.live);
        assert!(matches!(send.wrapper, Wrapper::Libxl));
        assert!(matches!(send.after, AfterSave::Resume));
        // The last of --live / --non-live and of --resume / --leave-suspended wins.
        let s = opts(
            &[
                "save",
                "--domid",
                "3",
                "--out",
                "f",
                "--live",
                "--non-live",
                "--resume",
                "--leave-suspended",
            ],
            false,
        );
        assert!(!s.live && matches!(s.after, AfterSave::LeaveSuspended));
        let s = opts(
            &["save", "--domid", "3", "--out", "f", "--non-live", "--live"],
            false,
        );
        assert!(s.live);
        let m = opts(
            &[
                "migrate-send",
                "--domid",
                "3",
                "--to",
                "127.0.0.1:7790",
                "--quiet",
                "--downtime-ms",
                "150",
                "--max-bytes-factor",
                "2.5",
            ],
            true,
        );
        assert!(m.live);
        assert_eq!(m.policy.downtime_target, Duration::from_millis(150));
        assert_eq!(m.policy.max_bytes_factor, 2.5);
        let m = opts(
            &["migrate-send", "--domid", "3", "--to", "h:1", "--non-live"],
            true,
        );
        assert!(!m.live);
        assert_eq!(
            parse(&[
                "save",
                "--domid",
                "1",
                "--out",
                "f",
                "--libxl",
                "--xl-config",
                "c"
            ])
            .unwrap_err()
            .kind(),
            ErrorKind::ArgumentConflict
        );
    }
}
