use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::process::ExitCode;
use std::time::Duration;

use xenguest::save::{domain_config_json, save, AfterSave, Progress, SaveOptions, Wrapper};

use xenguest::stream::{DecoderOptions, Item, Record, StreamReader};

const USAGE: &str = "\
usage:
  xenguest inspect FILE
      Describe a libxc stream, libxl stream or xl save file.
  xenguest save --domid N --out FILE [OPTIONS]
      Save a running 64-bit PV guest to FILE.
  xenguest send --domid N [OPTIONS]
      The same, writing the stream to standard output (live by default).
  xenguest restore --in FILE|- [--name NAME] [--memory MIB] [--vcpus N] [--paused]
      Restore a libxc stream, libxl stream or xl save file as a new domain.
  xenguest receive [--name NAME] [--paused]
      The same, reading the stream from standard input.
  xenguest migrate-receive --listen ADDR:PORT [--name NAME]
      Receive one live migration over TCP, then exit (prints a line once
      listening, and the new domain's id and name at the end).
  xenguest migrate-send --domid N --to HOST:PORT [OPTIONS]
      Live-migrate domain N to a migrate-receive at HOST:PORT; progress on
      standard error, a summary line at the end.  Takes --non-live,
      --downtime-ms, --max-rounds, --max-bytes-factor, --suspend-timeout,
      --xl-config and --quiet as below.

save/send options:
  --live                 pre-copy while the guest runs (log-dirty rounds),
                         then suspend for the final pass (send: default)
  --non-live             suspend first, then write everything (save: default)
  --xl-config FILE       write an `xl save` file (`xl restore FILE` reads it):
                         FILE holds the domain config as JSON, either the
                         output of `xl list -l NAME` or a libxl_domain_config
  --libxl                write a libxl stream (LibxlFmt) without the xl header
                         (default without --xl-config: the bare libxc stream)
  --resume               resume the guest in place after the save
  --leave-suspended      leave the guest suspended after the save
                         (default: destroy it, as `xl save` does)
  --downtime-ms N        live: suspend once the estimated final pass takes
                         at most N ms at the measured bandwidth (default 300)
  --max-rounds N         live: suspend after at most N rounds (default 10)
  --max-bytes-factor F   live: suspend once the bytes sent exceed F times the
                         guest's RAM (default 3.0)
  --suspend-timeout S    seconds the guest may take to suspend (default 60)
  --quiet                no progress lines on standard error

On any failure the guest keeps running (it is resumed if it was suspended)
and log-dirty mode is off again.
";

fn usage() -> ExitCode {
    eprint!("{USAGE}");
    ExitCode::from(2)
}

/// `xenguest restore --in FILE|- [...]` and `xenguest receive [...]`
/// (the same, reading stdin): prints the new domid.
fn restore_cmd(args: &[String], stdin_default: bool) -> ExitCode {
    use xenguest::restore::{restore, RestoreOptions};
    let mut opts = RestoreOptions::default();
    let mut input: Option<String> = stdin_default.then(|| "-".to_string());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |what: &str| -> Option<String> {
            let v = it.next().cloned();
            if v.is_none() {
                eprintln!("xenguest: {what} needs a value");
            }
            v
        };
        match a.as_str() {
            "--in" if !stdin_default => match val("--in") {
                Some(v) => input = Some(v),
                None => return usage(),
            },
            "--name" => match val("--name") {
                Some(v) => opts.name = Some(v),
                None => return usage(),
            },
            "--memory" => match val("--memory").and_then(|v| v.parse().ok()) {
                Some(v) => opts.memory_mib = Some(v),
                None => return usage(),
            },
            "--vcpus" => match val("--vcpus").and_then(|v| v.parse().ok()) {
                Some(v) => opts.max_vcpus = Some(v),
                None => return usage(),
            },
            "--paused" => opts.paused = true,
            other => {
                eprintln!("xenguest: unknown argument {other:?}");
                return usage();
            }
        }
    }
    let Some(input) = input else {
        eprintln!("xenguest restore: --in FILE (or - for stdin) is required");
        return usage();
    };
    let result = if input == "-" {
        restore(&mut std::io::stdin().lock(), &opts)
    } else {
        match File::open(&input) {
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

fn inspect(path: &str) -> ExitCode {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("xenguest: {path}: {e}");
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
                    "xenguest: {path}: at offset {}: {e}",
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

fn parse_save_args(
    args: &[String],
    send: bool,
) -> Result<(u32, Option<String>, SaveOptions, bool), String> {
    let mut domid = None;
    let mut out = None;
    let mut opts = SaveOptions {
        live: send,
        ..SaveOptions::default()
    };
    let mut libxl = false;
    let mut xl_config = None;
    let mut quiet = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--domid" => {
                let v = val(a)?;
                domid = Some(v.parse().map_err(|_| format!("bad domid {v:?}"))?);
            }
            "--out" if !send => out = Some(val(a)?),
            "--live" => opts.live = true,
            "--non-live" => opts.live = false,
            "--xl-config" => xl_config = Some(val(a)?),
            "--libxl" => libxl = true,
            "--resume" => opts.after = AfterSave::Resume,
            "--leave-suspended" => opts.after = AfterSave::LeaveSuspended,
            "--downtime-ms" => {
                let v = val(a)?;
                opts.policy.downtime_target = Duration::from_millis(
                    v.parse().map_err(|_| format!("bad --downtime-ms {v:?}"))?,
                );
            }
            "--max-rounds" => {
                let v = val(a)?;
                opts.policy.max_rounds =
                    v.parse().map_err(|_| format!("bad --max-rounds {v:?}"))?;
            }
            "--max-bytes-factor" => {
                let v = val(a)?;
                opts.policy.max_bytes_factor = v
                    .parse()
                    .map_err(|_| format!("bad --max-bytes-factor {v:?}"))?;
            }
            "--suspend-timeout" => {
                let v = val(a)?;
                opts.suspend_timeout = Duration::from_secs(
                    v.parse()
                        .map_err(|_| format!("bad --suspend-timeout {v:?}"))?,
                );
            }
            "--quiet" => quiet = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let domid = domid.ok_or("--domid is required")?;
    if !send && out.is_none() {
        return Err("--out is required".into());
    }
    opts.wrapper = match (xl_config, libxl) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(&f).map_err(|e| format!("{f}: {e}"))?;
            Wrapper::Xl {
                config_json: domain_config_json(&text).map_err(|e| format!("{f}: {e}"))?,
            }
        }
        (None, true) => Wrapper::Libxl,
        (None, false) => Wrapper::Libxc,
    };
    Ok((domid, out, opts, quiet))
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

fn save_cmd(args: &[String], send: bool) -> ExitCode {
    let (domid, out, opts, quiet) = match parse_save_args(args, send) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("xenguest: {e}");
            return usage();
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
                    eprintln!("xenguest: {path}: {e}");
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
            if out.is_some() {
                // Leave no half-written file that looks like a save.
                let _ = std::fs::remove_file(out.as_deref().unwrap_or_default());
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

fn migrate_receive_cmd(args: &[String]) -> ExitCode {
    use xenguest::migrate::{receive, tune, ReceiveOptions};
    let mut listen = None;
    let mut opts = ReceiveOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--listen", Some(v)) => listen = Some(v.clone()),
            ("--name", Some(v)) => opts.name = Some(v.clone()),
            _ => {
                eprintln!("xenguest: bad or incomplete argument {a:?}");
                return usage();
            }
        }
    }
    let Some(listen) = listen else {
        eprintln!("xenguest migrate-receive: --listen ADDR:PORT is required");
        return usage();
    };
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

fn migrate_send_cmd(args: &[String]) -> ExitCode {
    use xenguest::migrate::{send, tune, MigrateOptions, MigrateProgress};
    // The save options parser takes everything but --to.
    let mut rest = Vec::new();
    let mut to = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--to" {
            to = it.next().cloned();
            if to.is_none() {
                eprintln!("xenguest: --to needs a value");
                return usage();
            }
        } else {
            rest.push(a.clone());
        }
    }
    let (domid, _, sopts, quiet) = match parse_save_args(&rest, true) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("xenguest: {e}");
            return usage();
        }
    };
    let Some(to) = to else {
        eprintln!("xenguest migrate-send: --to HOST:PORT is required");
        return usage();
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("inspect") if args.len() == 2 => inspect(&args[1]),
        Some("restore") => restore_cmd(&args[1..], false),
        Some("receive") => restore_cmd(&args[1..], true),
        Some("save") => save_cmd(&args[1..], false),
        Some("send") => save_cmd(&args[1..], true),
        Some("migrate-receive") => migrate_receive_cmd(&args[1..]),
        Some("migrate-send") => migrate_send_cmd(&args[1..]),
        Some("inspect") | Some("--help") | Some("-h") => usage(),
        _ => {
            eprintln!("xenguest: not implemented yet");
            ExitCode::FAILURE
        }
    }
}
