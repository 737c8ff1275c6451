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

/// `1,2,3,7` -> `1-3,7` (in hex), in the order given.
pub fn ranges(pfns: &[u64]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < pfns.len() {
        let mut j = i;
        while j + 1 < pfns.len() && pfns[j + 1] == pfns[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if i == j {
            out.push_str(&format!("{:x}", pfns[i]));
        } else {
            out.push_str(&format!("{:x}-{:x}", pfns[i], pfns[j]));
        }
        i = j + 1;
    }
    out
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
    let mut runs = Vec::new();
    let mut i = 0;
    while i < z.len() {
        let mut j = i;
        while j + 1 < z.len() && z[j + 1] == z[j] + 8 {
            j += 1;
        }
        runs.push(format!("{:x}-{:x}", z[i], z[j] + 7));
        i = j + 1;
    }
    runs.join(",")
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
    }
}
