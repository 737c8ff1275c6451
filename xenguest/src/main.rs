use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::process::ExitCode;

use xenguest::stream::{DecoderOptions, Item, Record, StreamReader};

fn usage() -> ExitCode {
    eprintln!("usage: xenguest inspect FILE   (libxc stream, libxl stream or xl save file)");
    ExitCode::from(2)
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
        Some("inspect") | Some("--help") | Some("-h") => usage(),
        _ => {
            eprintln!("xenguest: not implemented yet");
            ExitCode::FAILURE
        }
    }
}
