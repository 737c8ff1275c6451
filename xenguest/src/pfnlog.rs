//! A trace of which guest frames a save sent and a restore wrote, for
//! following one bad page of a migrated guest back through the rounds.
//! Off unless `XENGUEST_PFN_LOG` names a file (appended to).

use std::io::Write;

fn path() -> Option<&'static std::path::Path> {
    static PATH: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| std::env::var_os("XENGUEST_PFN_LOG").map(Into::into))
        .as_deref()
}

/// Whether the trace is on (callers skip collecting pfns otherwise).
pub fn enabled() -> bool {
    path().is_some()
}

/// Appends `what: RANGES` (pfns in hex, runs as `a-b`) to the trace.
pub fn log(what: std::fmt::Arguments<'_>, pfns: &[u64]) {
    let Some(p) = path() else { return };
    let line = format!("{what}: {}\n", ranges(pfns));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Runs of `values` that go up by `step`, as (first, last) pairs, in the
/// order given.
fn runs(values: &[u64], step: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &v in values {
        match out.last_mut() {
            Some((_, last)) if *last + step == v => *last = v,
            _ => out.push((v, v)),
        }
    }
    out
}

/// `1,2,3,7` -> `1-3,7` (in hex), in the order given.
pub fn ranges(pfns: &[u64]) -> String {
    runs(pfns, 1)
        .iter()
        .map(|&(a, b)| {
            if a == b {
                format!("{a:x}")
            } else {
                format!("{a:x}-{b:x}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Per-pfn hashes of the last data page sent (save) or written (restore),
/// data pages only (page tables are rewritten on the way).
static HASHES: std::sync::Mutex<Option<std::collections::BTreeMap<u64, u64>>> =
    std::sync::Mutex::new(None);

/// A cheap content hash of a page.
pub fn hash(page: &[u8]) -> u64 {
    page.chunks_exact(8).fold(0xCBF2_9CE4_8422_2325u64, |h, c| {
        (h ^ u64::from_le_bytes(c.try_into().expect("8 bytes"))).wrapping_mul(0x100_0000_01B3)
    })
}

/// Remembers `page` as the last content of `pfn` that went out or in.
pub fn record(pfn: u64, page: &[u8]) {
    if !enabled() {
        return;
    }
    let mut g = HASHES.lock().unwrap_or_else(|e| e.into_inner());
    g.get_or_insert_with(Default::default)
        .insert(pfn, hash(page));
}

/// Forgets `pfn` (it was sent as a page table or without data).
pub fn forget(pfn: u64) {
    if !enabled() {
        return;
    }
    let mut g = HASHES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = g.as_mut() {
        m.remove(&pfn);
    }
}

/// The recorded (pfn, hash) pairs.
pub fn recorded() -> Vec<(u64, u64)> {
    let g = HASHES.lock().unwrap_or_else(|e| e.into_inner());
    g.as_ref()
        .map(|m| m.iter().map(|(&p, &h)| (p, h)).collect())
        .unwrap_or_default()
}

/// Where a page has runs of zero bytes (in 8-byte words), as `off-off`.
pub fn zero_runs(page: &[u8]) -> String {
    let z: Vec<u64> = page
        .chunks_exact(8)
        .enumerate()
        .filter(|(_, c)| c.iter().all(|&b| b == 0))
        .map(|(i, _)| i as u64 * 8)
        .collect();
    runs(&z, 8)
        .iter()
        .map(|&(a, b)| format!("{a:x}-{:x}", b + 7))
        .collect::<Vec<_>>()
        .join(",")
}

/// Bytes as hex and as text where printable.
pub fn hex_text(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let text: String = b
        .iter()
        .map(|&x| {
            if (0x20..0x7f).contains(&x) {
                x as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{hex} |{text}|")
}

/// Compares every recorded page with `current(pfns)` (its content now) and
/// logs the ones that differ under `what`; returns how many differ.
pub fn check(what: &str, mut current: impl FnMut(&[u64]) -> Vec<Option<Vec<u8>>>) -> usize {
    if !enabled() {
        return 0;
    }
    let rec = recorded();
    let mut bad = 0;
    for chunk in rec.chunks(512) {
        let pfns: Vec<u64> = chunk.iter().map(|&(p, _)| p).collect();
        let pages = current(&pfns);
        for (&(pfn, h), page) in chunk.iter().zip(pages) {
            let Some(page) = page else { continue };
            if hash(&page) != h {
                bad += 1;
                log(
                    format_args!(
                        "{what}: pfn {pfn:x} differs, zero words now at [{}], last 64 bytes now {}",
                        zero_runs(&page),
                        hex_text(&page[page.len() - 64..])
                    ),
                    &[pfn],
                );
            }
        }
    }
    log(
        format_args!("{what}: {} pages compared, {bad} differ", rec.len()),
        &[],
    );
    let mut s = String::new();
    for (p, h) in &rec {
        s.push_str(&format!("h {p:x} {h:016x}\n"));
    }
    if let Some(p) = path() {
        let _ = std::fs::write(p.with_extension(format!("{what}.hashes")), s);
    }
    bad
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_are_folded() {
        assert_eq!(super::ranges(&[1, 2, 3, 7, 0x10, 0x11]), "1-3,7,10-11");
        assert_eq!(super::ranges(&[]), "");
        let mut page = [1u8; 64];
        page[8..24].fill(0);
        page[56..].fill(0);
        assert_eq!(super::zero_runs(&page), "8-17,38-3f");
    }
}
