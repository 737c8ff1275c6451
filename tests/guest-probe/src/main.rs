//! The guest kit's probe. It runs as the only program of a small PV guest and
//! makes what a migration does to a guest visible from outside, on its console:
//!
//! * it dirties a working set at a steady rate, so pre-copy has work to do;
//! * it keeps the expected content of every page of that set and of a static
//!   pattern, and verifies all of it every few seconds and on demand (a `v`
//!   line on the console), so lost or stale pages show as `verify FAILED`;
//! * it sleeps 1 ms in a loop and reports every gap in its wall clock above a
//!   threshold: the largest gap during a migration is the downtime the guest saw
//!   (the PV clock keeps running while the domain is paused); each verify line
//!   also carries the largest gap since the previous one (`window_gap_ms=`),
//!   however small.
//!
//! Console lines all start with `probe: ` so tests can grep them.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PAGE_WORDS: usize = 4096 / 8;

struct Config {
    workset_mb: usize,
    pattern_mb: usize,
    pages_per_tick: usize,
    gap_ms: u64,
    /// The loop's sleep: 1 ms to time a migration's pause precisely; longer
    /// for a guest that only has to stay alive and keep its memory.
    tick: Duration,
    verify_every: Duration,
}

fn parse_args() -> Result<Config, String> {
    let mut c = Config {
        workset_mb: 16,
        pattern_mb: 8,
        pages_per_tick: 0,
        gap_ms: 300,
        tick: Duration::from_millis(1),
        verify_every: Duration::from_secs(5),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--workset-mb" => c.workset_mb = val(&a)? as usize,
            "--pattern-mb" => c.pattern_mb = val(&a)? as usize,
            "--pages-per-tick" => c.pages_per_tick = val(&a)? as usize,
            "--gap-ms" => c.gap_ms = val(&a)?,
            "--tick-ms" => c.tick = Duration::from_millis(val(&a)?.max(1)),
            "--verify-every-s" => c.verify_every = Duration::from_secs(val(&a)?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if c.pages_per_tick == 0 {
        // Dirty the whole working set about once a second.
        let ticks_per_s = (1000 / c.tick.as_millis().max(1)).max(1) as usize;
        c.pages_per_tick = (c.workset_mb * 256).div_ceil(ticks_per_s).max(1);
    }
    Ok(c)
}

/// A word's expected value: depends on the page's token and the word's index,
/// so a page swapped with another, or an old copy, does not verify.
fn word(token: u64, page: usize, i: usize) -> u64 {
    let x = token
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((page as u64) << 20 | i as u64);
    x ^ (x >> 29)
}

struct Memory {
    workset: Vec<u64>,
    tokens: Vec<u64>,
    pattern: Vec<u64>,
    pattern_sum: u64,
    next_token: u64,
    cursor: usize,
}

impl Memory {
    fn new(c: &Config) -> Memory {
        let pages = c.workset_mb * 256;
        let mut m = Memory {
            workset: vec![0; pages * PAGE_WORDS],
            tokens: vec![0; pages],
            pattern: pattern_words(c.pattern_mb * 256 * PAGE_WORDS),
            pattern_sum: 0,
            next_token: 1,
            cursor: 0,
        };
        m.pattern_sum = checksum(&m.pattern);
        for p in 0..pages {
            m.dirty_page(p);
        }
        m
    }

    fn dirty_page(&mut self, p: usize) {
        let t = self.next_token;
        self.next_token += 1;
        self.tokens[p] = t;
        for (i, w) in self.workset[p * PAGE_WORDS..(p + 1) * PAGE_WORDS]
            .iter_mut()
            .enumerate()
        {
            *w = word(t, p, i);
        }
    }

    fn dirty(&mut self, n: usize) {
        for _ in 0..n {
            let p = self.cursor;
            self.cursor = (self.cursor + 1) % self.tokens.len();
            self.dirty_page(p);
        }
    }

    /// Returns the first bad place, if any.
    fn verify(&self) -> Result<(), String> {
        for (p, &t) in self.tokens.iter().enumerate() {
            for i in 0..PAGE_WORDS {
                if self.workset[p * PAGE_WORDS + i] != word(t, p, i) {
                    return Err(format!("workset page={p} word={i}"));
                }
            }
        }
        if checksum(&self.pattern) != self.pattern_sum {
            return Err("pattern checksum".into());
        }
        Ok(())
    }

    /// After a failed verify: which machine pages are wrong and what they
    /// hold instead, so a migration defect can be traced to a guest frame.
    fn diagnose(&self) -> Vec<String> {
        let pages = self.tokens.len() as u64;
        let ws = bad_frames(&self.workset, |k| {
            let (p, i) = (k / PAGE_WORDS, k % PAGE_WORDS);
            word(self.tokens[p], p, i)
        });
        let mut out = Vec::new();
        for b in ws {
            let k = b.first;
            let (p, i) = (k / PAGE_WORDS, k % PAGE_WORDS);
            let t = self.tokens[p];
            let found = self.workset[k];
            let what = if found == 0 {
                "zero".to_string()
            } else if let Some(c) = (1..=2000u64)
                .take_while(|c| c * pages < t)
                .find(|c| word(t - c * pages, p, i) == found)
            {
                format!("stale by {c} cycles")
            } else {
                format!("unknown {found:#018x}")
            };
            out.push(b.report(
                "workset",
                &format!("probe page {p} word {i}: {what}"),
                &self.workset,
            ));
        }
        let fresh = pattern_words(self.pattern.len());
        for b in bad_frames(&self.pattern, |k| fresh[k]) {
            let found = self.pattern[b.first];
            let what = if found == 0 {
                "zero".to_string()
            } else if let Some(j) = fresh.iter().position(|&x| x == found) {
                format!("pattern word {j}")
            } else {
                format!("unknown {found:#018x}")
            };
            out.push(b.report("pattern", &what, &self.pattern));
        }
        out
    }
}

/// Words as hex, with their bytes as text where printable (what a stray
/// write put there often says where it came from).
fn hex_words(w: &[u64]) -> String {
    let hex: Vec<String> = w.iter().map(|x| format!("{x:016x}")).collect();
    let text: String = w
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .map(|b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{} |{text}|", hex.join(" "))
}

/// A 4 KiB frame of a vector that holds wrong words (indices into the vector).
struct BadFrame {
    va: usize,
    bad: usize,
    first: usize,
    last: usize,
}

impl BadFrame {
    /// One diagnosis line: where the frame is, what is wrong in it (`what`),
    /// and its first bad words out of `v`.
    fn report(&self, kind: &str, what: &str, v: &[u64]) -> String {
        format!(
            "{kind} frame va={:#x} pfn={} bad_words={} first={} last={} ({what}) words {}",
            self.va,
            pfn_of(self.va),
            self.bad,
            self.first,
            self.last,
            hex_words(&v[self.first..=self.last.min(self.first + 7)])
        )
    }
}

/// The frames (by virtual address) of `v` whose words differ from
/// `expected`, at most 16.
fn bad_frames(v: &[u64], expected: impl Fn(usize) -> u64) -> Vec<BadFrame> {
    let mut out: Vec<BadFrame> = Vec::new();
    for (k, &x) in v.iter().enumerate() {
        if x == expected(k) {
            continue;
        }
        let va = &v[k] as *const u64 as usize & !0xfff;
        let n = out.len();
        match out.last_mut() {
            Some(b) if b.va == va => {
                b.bad += 1;
                b.last = k;
            }
            _ if n == 16 => break,
            _ => out.push(BadFrame {
                va,
                bad: 1,
                first: k,
                last: k,
            }),
        }
    }
    out
}

/// The guest frame behind a virtual address of ours (from
/// /proc/self/pagemap; the probe runs as init, so it may read frames).
fn pfn_of(va: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let read = || -> std::io::Result<u64> {
        let mut f = std::fs::File::open("/proc/self/pagemap")?;
        f.seek(SeekFrom::Start((va as u64 / 4096) * 8))?;
        let mut b = [0u8; 8];
        f.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    };
    match read() {
        Ok(e) if e >> 63 == 1 => format!("{:#x}", e & ((1 << 55) - 1)),
        Ok(_) => "not-present".into(),
        Err(e) => format!("unknown({e})"),
    }
}

/// The static pattern: xorshift64, a sequence nothing else in the guest
/// would produce.
fn pattern_words(n: usize) -> Vec<u64> {
    let mut s: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        })
        .collect()
}

fn checksum(v: &[u64]) -> u64 {
    v.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &x| {
        (h ^ x).wrapping_mul(0x100_0000_01B3)
    })
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn main() {
    let c = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            println!("probe: error {e}");
            std::process::exit(2);
        }
    };
    let mut mem = Memory::new(&c);
    let requested = Arc::new(AtomicBool::new(false));
    {
        let requested = requested.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == "v" => requested.store(true, Ordering::SeqCst),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
    }
    println!(
        "probe: ready workset_mb={} pattern_mb={} pages_per_tick={} gap_ms={}",
        c.workset_mb, c.pattern_mb, c.pages_per_tick, c.gap_ms
    );
    let mut last = now_ms();
    let mut max_gap: u128 = 0;
    // Largest gap since the last verify line, reported whatever its size:
    // a pause under the threshold still shows there.
    let mut window_gap: u128 = 0;
    let mut verified = 0u64;
    let mut last_verify = Instant::now();
    loop {
        std::thread::sleep(c.tick);
        let now = now_ms();
        let gap = now.saturating_sub(last);
        window_gap = window_gap.max(gap);
        if gap > c.gap_ms as u128 {
            max_gap = max_gap.max(gap);
            println!("probe: gap ms={gap} at_ms={now}");
        }
        last = now;
        mem.dirty(c.pages_per_tick);
        if requested.swap(false, Ordering::SeqCst) || last_verify.elapsed() >= c.verify_every {
            verified += 1;
            match mem.verify() {
                Ok(()) => println!(
                    "probe: verify ok n={verified} max_gap_ms={max_gap} window_gap_ms={window_gap} at_ms={}",
                    now_ms()
                ),
                Err(e) => {
                    println!("probe: verify FAILED n={verified} at {e}");
                    for line in mem.diagnose() {
                        println!("probe: bad {line}");
                    }
                }
            }
            let _ = std::io::stdout().flush();
            last_verify = Instant::now();
            window_gap = 0;
            // Verification itself takes time: do not count it as a pause.
            last = now_ms();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            workset_mb: 1,
            pattern_mb: 1,
            pages_per_tick: 3,
            gap_ms: 50,
            tick: Duration::from_millis(1),
            verify_every: Duration::from_secs(5),
        }
    }

    #[test]
    fn fresh_memory_verifies_and_keeps_verifying_while_dirtied() {
        let mut m = Memory::new(&cfg());
        assert!(m.verify().is_ok());
        m.dirty(1000);
        assert!(m.verify().is_ok());
    }

    #[test]
    fn a_stale_page_is_caught() {
        let mut m = Memory::new(&cfg());
        let old = m.workset[5 * PAGE_WORDS..6 * PAGE_WORDS].to_vec();
        m.dirty_page(5);
        m.workset[5 * PAGE_WORDS..6 * PAGE_WORDS].copy_from_slice(&old);
        assert_eq!(m.verify().unwrap_err(), "workset page=5 word=0");
    }

    #[test]
    fn a_flipped_pattern_bit_is_caught() {
        let mut m = Memory::new(&cfg());
        m.pattern[77] ^= 1 << 3;
        assert_eq!(m.verify().unwrap_err(), "pattern checksum");
        let d = m.diagnose();
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("pattern frame"), "{d:?}");
        assert!(d[0].contains("bad_words=1 first=77 last=77"), "{d:?}");
    }

    #[test]
    fn a_stale_page_is_diagnosed_by_its_age() {
        let mut m = Memory::new(&cfg());
        let pages = m.tokens.len();
        let old = m.workset[5 * PAGE_WORDS..6 * PAGE_WORDS].to_vec();
        // Two whole cycles later, the old copy is two cycles stale.
        m.dirty(2 * pages);
        m.workset[5 * PAGE_WORDS..6 * PAGE_WORDS].copy_from_slice(&old);
        let d = m.diagnose();
        assert!(
            !d.is_empty() && d.iter().all(|l| l.contains("stale by 2 cycles")),
            "{d:?}"
        );
    }
}
