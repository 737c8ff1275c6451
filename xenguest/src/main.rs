use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::process::ExitCode;

use xenguest::stream::{DecoderOptions, Item, Record, StreamReader};

fn usage() -> ExitCode {
    eprintln!(
        "usage: xenguest inspect FILE   (libxc stream, libxl stream or xl save file)\n       \
         xenguest restore --in FILE|- [--name NAME] [--memory MIB] [--vcpus N] [--paused]\n       \
         xenguest receive [--name NAME] [--paused]   (restore from stdin)"
    );
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("inspect") if args.len() == 2 => inspect(&args[1]),
        Some("restore") => restore_cmd(&args[1..], false),
        Some("receive") => restore_cmd(&args[1..], true),
        Some("inspect") | Some("--help") | Some("-h") => usage(),
        _ => {
            eprintln!("xenguest: not implemented yet");
            ExitCode::FAILURE
        }
    }
}
